// BpeModel: byte-pair encoding of one pre-tokenized piece, with the semantics of Hugging Face
// `tokenizers`' BPE model (which both GPT-2-style byte-level vocabularies and SentencePiece-derived
// ones use).
//
// A piece starts as one symbol per code point (a code point missing from the vocabulary becomes its
// <0xNN> byte tokens when byte_fallback is on, else the unknown token); then the applicable merge of
// lowest rank is applied, leftmost first, until none applies. SentencePiece BPE ("merge the pair whose
// result has the highest score") is the same algorithm once merges are ranked by that score, which is
// how FromScores builds them. Encoded pieces are memoised in a bounded, sharded cache, so common words
// cost one hash lookup. Immutable after construction apart from the cache: Encode is const and
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace bitloom::formats {

struct BpeOptions {
  // Code points missing from the vocabulary become <0xNN> byte tokens (SentencePiece style).
  bool byte_fallback = false;
  // A piece that is itself a vocabulary token is emitted whole, without merging (Llama 3).
  bool ignore_merges = false;
  // Consecutive unknown code points collapse into one unknown token.
  bool fuse_unk = false;
  std::optional<int32_t> unk_id;
};

// Heterogeneous lookup so that a std::string_view finds a std::string key without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
using TokenIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `vocab`: token string -> id. `merges`: pairs of token strings, highest priority first.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromMerges(
      TokenIndex vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options);

  // SentencePiece-style: merges are every split of an `eligible` token into two vocabulary tokens,
  // ranked by the token's score (higher first), then by the left and right ids.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromScores(TokenIndex vocab,
                                                              const std::vector<float>& scores,
                                                              const std::vector<bool>& eligible,
                                                              BpeOptions options);
  ~BpeModel();

  // Appends the ids of `piece` (valid UTF-8) to `ids`.
  void Encode(std::string_view piece, std::vector<int32_t>& ids) const;

  std::optional<int32_t> TokenId(std::string_view token) const;
  const TokenIndex& vocab() const { return vocab_; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    uint32_t rank;
    int32_t result;
  };
  struct Cache;

  BpeModel(TokenIndex vocab, BpeOptions options);
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void EncodeUncached(std::string_view piece, std::vector<int32_t>& ids) const;

  TokenIndex vocab_;
  BpeOptions options_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t byte_tokens_[256];  // <0xNN> ids, -1 where missing
  std::unique_ptr<Cache> cache_;
};

}  // namespace bitloom::formats
