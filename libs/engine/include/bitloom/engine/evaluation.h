// Quality evaluation of a model against text and against a reference model: perplexity, top-1
// accuracy, KL divergence and top-1 agreement over a stated windowing protocol. What `bitloom eval`
// and the quantization results report; the CLI only tokenizes, loads and prints.
//
// Windows (MakeEvaluationWindows) follow the protocol of scoring.h's EvaluatePerplexity, so the two
// agree exactly: windows of `context_length` tokens start every `stride` tokens, each is run from an
// empty KV cache, a window scores only targets no earlier window scored and never its own first token
// (it has no context inside the window). stride == context_length (the default, 2048/2048) gives
// disjoint windows: every token lies in exactly one window and each window's first token goes
// unscored. stride < context_length scores every token but ids[0] exactly once.
//
// Metrics, per scored target t (predicting ids[t] from the window's tokens before it):
//   NLL        −log P_model(ids[t]);                 perplexity = exp(Σ NLL / targets)
//   top-1      argmax P_model == ids[t]               (accuracy against the text)
//   KL         Σ_v P_ref(v)·(log P_ref(v) − log P_model(v)) in nats: KL(reference ‖ model), the
//              direction llama.cpp's KL-divergence statistics use; mean over targets
//   agreement  argmax P_model == argmax P_ref
// Log-softmax is computed in double over the fp32 logits, ties in argmax go to the lower id (as in
// ScoreTokens). KL and agreement need both full distributions, so only the in-process evaluation
// (EvaluateModels) has them; EvaluateScorers works over a per-token scorer such as inferd's
// ScoreTokens RPC, which returns the target's log-probability and whether it was the argmax, and
// reports perplexity and top-1 accuracy only.
//
// Thread-safety: the functions keep no state; the models are only read (DecoderModel::Forward is
// const and safe to call concurrently). Cost: one forward pass per window and model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/scoring.h"

namespace bitloom::engine {

struct EvaluationProtocol {
  int context_length = 2048;  // tokens per window (the caller caps it at the model's context)
  int stride = 2048;          // tokens between window starts, 1..context_length
  int64_t max_tokens = 0;     // evaluate only the first max_tokens ids; 0: all of them
  int chunk_tokens = 64;      // prefill chunk inside a window (memory, not results)
  // "context 2048, stride 2048 (disjoint windows), first 8192 of 300000 tokens"-style text for a
  // report; `total_tokens` is the length of the whole token stream before max_tokens.
  std::string Describe(int64_t total_tokens) const;
};

// One window: tokens ids[begin, end); targets ids[t] for t in [first_target, end).
struct EvaluationWindow {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t first_target = 0;
};

// The windows over `num_tokens` ids. INVALID_ARGUMENT for context_length < 2, a stride outside
// [1, context_length], or fewer than 2 tokens.
absl::StatusOr<std::vector<EvaluationWindow>> MakeEvaluationWindows(int64_t num_tokens, int context_length,
                                                                    int stride);

// Per-model sums over the scored targets.
struct ModelScoreSums {
  double nll_sum = 0.0;
  int64_t targets = 0;
  int64_t top1_correct = 0;
  double Perplexity() const;
  double Top1Accuracy() const;
};

struct EvaluationResult {
  int64_t windows = 0;
  int64_t targets = 0;  // tokens scored
  ModelScoreSums model;
  bool has_reference = false;
  ModelScoreSums reference;  // when has_reference
  // KL(reference ‖ model) and top-1 agreement: when has_divergence (in-process with a reference).
  bool has_divergence = false;
  double kl_sum = 0.0;  // nats
  double kl_max = 0.0;  // the largest per-target KL
  int64_t top1_agree = 0;
  double MeanKl() const;
  double Top1Agreement() const;
};

// Called after each window with (targets scored so far, targets in all).
using EvaluationProgress = std::function<void(int64_t, int64_t)>;

// Runs `model` (and `reference`, when not null) over every window of ids[0, max_tokens). Both must
// share the vocabulary (INVALID_ARGUMENT otherwise); ids out of range are INVALID_ARGUMENT.
absl::StatusOr<EvaluationResult> EvaluateModels(const DecoderModel& model, const DecoderModel* reference,
                                                absl::Span<const int32_t> ids,
                                                const EvaluationProtocol& protocol,
                                                const EvaluationProgress& progress = {});

// Scores one window (its ids) with a model: TokenScores of ScoreTokens (logprobs[i] and greedy[i]
// for target i + 1 of the window). inferd's ScoreTokens RPC, or ScoreTokens in-process.
using WindowScorer = std::function<absl::StatusOr<TokenScores>(absl::Span<const int32_t>)>;

// Perplexity and top-1 accuracy over the same windows through scorers (has_divergence is false).
// `reference` may be null. A scorer returning the wrong number of scores is INTERNAL.
absl::StatusOr<EvaluationResult> EvaluateScorers(const WindowScorer& model, const WindowScorer* reference,
                                                 absl::Span<const int32_t> ids,
                                                 const EvaluationProtocol& protocol,
                                                 const EvaluationProgress& progress = {});

}  // namespace bitloom::engine
