// Tokenizer::Impl: the parts every tokenizer source is mapped onto. The loaders (tokenizer_json.cc,
// tokenizer_gguf.cc) fill one in and call Finish(); tokenizer.cc runs it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "bitloom/formats/bpe.h"
#include "bitloom/formats/pretokenizer.h"
#include "bitloom/formats/tokenizer.h"

namespace bitloom::formats {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  // Special tokens are recognised in text only with parse_special and dropped by skip_special.
  bool special = false;
  // Absorb the whitespace before / after the token into it.
  bool lstrip = false;
  bool rstrip = false;
};

// How ids turn back into bytes: tokenizer.json's decoder chain, reduced to what the supported
// decoders (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip) can express.
struct DecodeRules {
  bool byte_level = false;                                    // GPT-2 byte alphabet -> bytes
  std::vector<std::pair<std::string, std::string>> replace;  // applied to each token's text
  bool byte_fallback = false;                                // "<0xNN>" -> byte NN
  int strip_leading_spaces = 0;                              // from the start of the whole text
};

// Matches added tokens in text: leftmost, then longest, over a byte trie.
class AddedTokenMatcher {
 public:
  void Build(const std::vector<AddedToken>& tokens);
  // Finds the first match at or after `from`: sets [begin, end) and the index into the token list.
  // Special tokens count only when `parse_special`.
  bool Find(std::string_view text, size_t from, bool parse_special, size_t& begin, size_t& end,
            int& index) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<Node> nodes_;
  std::vector<bool> special_;
  bool first_byte_[256] = {};
};

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  std::vector<AddedToken> added;
  DecodeRules decode;
  std::vector<int32_t> prefix_ids;  // added by Encode(add_bos=true)
  std::vector<int32_t> suffix_ids;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  std::vector<int32_t> end_of_generation;

  // Derived by Finish().
  AddedTokenMatcher matcher;
  std::vector<std::string> token_strings;  // by id
  std::vector<std::string> token_bytes;    // by id
  std::vector<bool> special;               // by id
  std::vector<bool> eog;                   // by id
  std::vector<bool> present;               // by id: false for holes in the id space

  // Builds the id tables and the matcher; checks that every referenced id exists.
  absl::Status Finish();
};

}  // namespace bitloom::formats
