// Generate: the CPU engine's generation loop (prefill the prompt once, then decode token by token), and
// the stop-string helper the serving layer applies to detokenised text.
//
// Stopping: an EOS id of the model (unless ignore_eos) or one of params.stop_token_ids ends generation
// with kStop, the stop token itself included in `tokens` (the caller decides whether to show it);
// max_new_tokens or the KV/context limit ends it with kLength; the callback returning false ends it with
// kCancelled. Stop strings are text-level and left to the caller (see StopStringMatcher).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/generation_params.h"

namespace bitloom::engine {

enum class FinishReason { kStop, kLength, kCancelled };

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0.0f;  // log-softmax of the raw (unpenalised, untempered) logits; 0 unless requested
  std::vector<std::pair<int32_t, float>> top_logprobs;  // params.top_logprobs best, descending
};

struct GenerationResult {
  std::vector<GeneratedToken> tokens;
  FinishReason finish_reason = FinishReason::kLength;
  uint64_t seed = 0;  // the seed actually used (reported when the request asked for a random one)
};

struct GenerateOptions {
  std::vector<int32_t> eos_token_ids;  // the model's EOS ids (ModelConfig.eos_token_ids)
  int context_length = 0;              // 0: the model's max_position_embeddings
  // Called for every token as it is produced; returning false cancels. May be empty.
  std::function<bool(const GeneratedToken&)> on_token;
};

// INVALID_ARGUMENT for an empty prompt, a prompt id out of range, bad params, or a prompt that does not
// leave room for one new token in the context (naming both lengths).
absl::StatusOr<GenerationResult> Generate(const DecoderModel& model, absl::Span<const int32_t> prompt,
                                          const GenerationParams& params, const GenerateOptions& options);

// Finds stop strings in streamed text. Feed the whole text so far; it answers how much may be emitted
// now: up to the earliest stop string (then stopped() is true), or otherwise all but the longest suffix
// that could still grow into a stop string, so a client never sees half of a stop string.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Byte length of the prefix of `text` that is final and may be sent.
  size_t Update(const std::string& text);
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  bool stopped_ = false;
};

}  // namespace bitloom::engine
