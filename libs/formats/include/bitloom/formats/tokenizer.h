// Tokenizer: text <-> token ids exactly as the model's reference tokenizer does it.
//
// Built from a bitloom::v1::TokenizerSpec: either a Hugging Face tokenizer.json (byte-level BPE as in
// GPT-2, Llama 3, Qwen2, SmolLM2; or SentencePiece-derived BPE with byte fallback as in Llama 2,
// Mistral, Gemma), or GGUF `tokenizer.ggml.*` metadata, which is mapped onto the same pipeline. Encode
// runs: added/special tokens are cut out of the text first (longest match, never split), then each
// remaining segment is normalized, pre-tokenized and BPE-encoded; BOS is prepended when the model's
// rules say so. Decode maps each id to the bytes it stands for and joins them.
//
// A Tokenizer is immutable after construction (its BPE cache is internally synchronised): Encode,
// Decode and every other const method are thread-safe. An IncrementalDecoder is per stream and not
// thread-safe; it must not outlive its Tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::formats {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSpec(const v1::TokenizerSpec& spec);
  // `config_json` is tokenizer_config.json (may be empty): it supplies bos/eos tokens and the
  // add_bos_token rule when tokenizer.json's post-processor does not.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromHfJson(std::string_view tokenizer_json,
                                                               std::string_view config_json = {});
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const v1::GgufTokenizer& gguf);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `text` must be valid UTF-8 (INVALID_ARGUMENT otherwise). `add_bos`: add the special tokens the
  // model's rules add around a sequence (BOS for Llama/Gemma; nothing for SmolLM2), like
  // `add_special_tokens` in Hugging Face. `parse_special`: recognise special (control) tokens written
  // in the text, such as "<|im_start|>"; when false they are tokenized as plain text. Non-special
  // added tokens (Gemma's whitespace runs) are always recognised, as in the reference tokenizers.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos = false,
                                              bool parse_special = true) const;

  // Joins the tokens' bytes; an ill-formed UTF-8 subsequence becomes U+FFFD. `skip_special` drops
  // special tokens (BOS, EOS, control tokens). INVALID_ARGUMENT for an id outside the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes token `id` decodes to on its own (possibly part of a UTF-8 character, and with the
  // SentencePiece marker already turned into a space); empty for an unknown id. For logprob APIs.
  std::string_view TokenToPiece(int32_t id) const;
  // The token as written in the vocabulary ("Ġthe", "▁the", "<0x0A>"); empty for an unknown id.
  std::string_view TokenString(int32_t id) const;
  std::optional<int32_t> TokenId(std::string_view token) const;

  // One past the largest id (model vocabulary plus added tokens).
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // True when Encode(..., add_bos=true) prepends BOS.
  bool adds_bos() const;
  bool IsSpecial(int32_t id) const;
  // EOS and the other end-of-turn tokens (GGUF tokenizer.ggml.eot_token_ids, "<|im_end|>",
  // "<end_of_turn>", "<|eot_id|>" when present): generation stops at any of them.
  bool IsEndOfGeneration(int32_t id) const;
  // Decoding removes one leading space from the text (SentencePiece models that add a dummy prefix).
  bool strips_leading_space() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer for one generation: push ids as they are sampled and get back the text that
// is now final. Bytes of a UTF-8 character split across tokens (an emoji in byte-fallback tokens, a
// CJK character split by byte-level BPE) are held back until complete, so no broken UTF-8 is ever
// emitted, and the SentencePiece leading-space rule applies to the stream's start only. The
// concatenation of every Push() and Flush() equals Decode() of all ids for well-formed output.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true);

  // Text completed by this token (possibly empty). INVALID_ARGUMENT for an id outside the vocab.
  absl::StatusOr<std::string> Push(int32_t id);
  // The held-back bytes, ill-formed ones as U+FFFD; resets the stream.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace bitloom::formats
