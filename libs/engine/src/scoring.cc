#include "bitloom/engine/scoring.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/kernels/softmax.h"

namespace bitloom::engine {
namespace {

// Runs ids through a fresh cache and calls on_target(i, logprob, greedy) for each i >= first_target − 1
// with i + 1 < ids.size(), where logprob = log P(ids[i+1] | ids[0..i]).
template <typename Fn>
absl::Status RunAndScore(const DecoderModel& model, absl::Span<const int32_t> ids, int64_t first_target,
                         int chunk_tokens, Fn&& on_target) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t vocab = model.vocab_size();
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", ids[i], " is outside [0, ", vocab, ")"));
    }
  }
  KvCache cache = model.NewKvCache(static_cast<int>(n));
  const int64_t chunk = std::max(1, chunk_tokens);
  std::vector<int32_t> positions;
  // The last token predicts nothing, so it is never run.
  for (int64_t begin = 0; begin < n - 1; begin += chunk) {
    const int64_t end = std::min(n - 1, begin + chunk);
    positions.resize(end - begin);
    std::iota(positions.begin(), positions.end(), static_cast<int32_t>(begin));
    // Rows whose prediction is not needed still have to fill the cache; skip their logits when possible.
    const bool any_target = end - 1 >= first_target - 1;
    BITLOOM_ASSIGN_OR_RETURN(
        std::vector<float> logits,
        model.Forward(ids.subspan(begin, end - begin), positions, cache,
                      any_target ? DecoderModel::Logits::kAll : DecoderModel::Logits::kNone));
    if (!any_target) continue;
    for (int64_t i = begin; i < end; ++i) {
      if (i + 1 < first_target) continue;
      const float* row = logits.data() + (i - begin) * vocab;
      const double lse = kernels::LogSumExpF32(row, vocab);
      const int32_t target = ids[i + 1];
      on_target(i, static_cast<double>(row[target]) - lse,
                ArgMax(absl::MakeConstSpan(row, static_cast<size_t>(vocab))) == target);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenScores> ScoreTokens(const DecoderModel& model, absl::Span<const int32_t> ids,
                                        int chunk_tokens) {
  if (ids.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("ids: ", ids.size(), " tokens, scoring needs at least 2"));
  }
  TokenScores scores;
  scores.logprobs.resize(ids.size() - 1);
  scores.greedy.resize(ids.size() - 1);
  BITLOOM_RETURN_IF_ERROR(RunAndScore(model, ids, 1, chunk_tokens, [&](int64_t i, double lp, bool greedy) {
    scores.logprobs[i] = static_cast<float>(lp);
    scores.greedy[i] = greedy;
  }));
  return scores;
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const DecoderModel& model, absl::Span<const int32_t> ids,
                                                    const PerplexityOptions& o) {
  if (o.context_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat("context_length: ", o.context_length, " must be >= 2"));
  }
  if (o.stride < 1 || o.stride > o.context_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("stride: ", o.stride, " is outside [1, context_length = ", o.context_length, "]"));
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) return absl::InvalidArgumentError(absl::StrCat("ids: ", n, " tokens, perplexity needs at least 2"));
  PerplexityResult result;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < n; begin += o.stride) {
    const int64_t end = std::min(n, begin + o.context_length);
    // Targets ids[t] for t in [max(prev_end, begin + 1), end): not scored by an earlier window.
    const int64_t first_target = std::max(prev_end, begin + 1) - begin;  // window-relative
    BITLOOM_RETURN_IF_ERROR(RunAndScore(model, ids.subspan(begin, end - begin), first_target, o.chunk_tokens,
                                        [&](int64_t, double lp, bool) {
                                          result.nll_sum -= lp;
                                          ++result.tokens_scored;
                                        }));
    ++result.windows;
    if (o.progress) o.progress(result.tokens_scored, n - 1);
    prev_end = end;
    if (end == n) break;
  }
  result.perplexity = std::exp(result.nll_sum / static_cast<double>(result.tokens_scored));
  return result;
}

}  // namespace bitloom::engine
