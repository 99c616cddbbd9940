// Scoring and perplexity with the CPU engine: the ScoreTokens RPC and the quality baseline.
//
// ScoreTokens(ids) returns log P(ids[i+1] | ids[0..i]) for every i, one fewer value than ids, computed
// from log-softmax in double over fp32 logits. The sequence runs through the KV cache in chunks so the
// [tokens, vocab] logits never exist whole (262k-vocabulary Gemma would need 1 GiB per 1k tokens).
//
// EvaluatePerplexity follows the sliding-window protocol of Hugging Face's perplexity guide: windows of
// `context_length` tokens start every `stride` tokens; each window is run from an empty cache and scores
// only the targets not scored by an earlier window; a window's own first token is never a target (it has
// no context inside the window). With stride < context_length every token but ids[0] is scored exactly
// once, with at least context_length − stride tokens of context past the first window; with
// stride == context_length the windows are disjoint and each window's first token goes unscored. No BOS is inserted: the caller decides what ids are.
// perplexity = exp(Σ NLL / tokens scored).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/decoder_model.h"

namespace bitloom::engine {

struct TokenScores {
  std::vector<float> logprobs;  // [ids.size() − 1]
  std::vector<bool> greedy;     // [ids.size() − 1]: ids[i+1] was the argmax
};

// INVALID_ARGUMENT for fewer than 2 ids or an id out of range.
absl::StatusOr<TokenScores> ScoreTokens(const DecoderModel& model, absl::Span<const int32_t> ids,
                                        int chunk_tokens = 64);

struct PerplexityOptions {
  int context_length = 512;  // tokens per window
  int stride = 256;          // tokens between window starts; 1..context_length
  int chunk_tokens = 64;     // prefill chunk inside a window (memory, not results)
  // Called after each window with (targets scored so far, total targets); may be empty.
  std::function<void(int64_t, int64_t)> progress;
};

struct PerplexityResult {
  double nll_sum = 0.0;
  int64_t tokens_scored = 0;
  int64_t windows = 0;
  double perplexity = 0.0;
};

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const DecoderModel& model, absl::Span<const int32_t> ids,
                                                    const PerplexityOptions& options);

}  // namespace bitloom::engine
