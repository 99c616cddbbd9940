#include "bitloom/engine/evaluation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/kernels/softmax.h"

namespace bitloom::engine {
namespace {

int64_t CountTargets(const std::vector<EvaluationWindow>& windows) {
  int64_t n = 0;
  for (const EvaluationWindow& w : windows) n += w.end - w.first_target;
  return n;
}

absl::StatusOr<absl::Span<const int32_t>> Prefix(absl::Span<const int32_t> ids, const EvaluationProtocol& p) {
  if (p.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: ", p.max_tokens, " must be >= 0"));
  }
  if (p.max_tokens > 0 && static_cast<size_t>(p.max_tokens) < ids.size()) return ids.first(p.max_tokens);
  return ids;
}

absl::Status CheckIds(absl::Span<const int32_t> ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", ids[i], " is outside [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

// One row's log-softmax normaliser and argmax.
struct RowStats {
  double lse = 0.0;
  int32_t argmax = 0;
};

RowStats Stats(const float* row, int64_t vocab) {
  return {kernels::LogSumExpF32(row, vocab), ArgMax(absl::MakeConstSpan(row, static_cast<size_t>(vocab)))};
}

// KL(P_ref ‖ P_model) of one position, in double. Terms with P_ref = 0 (exp underflow) contribute 0,
// as their limit does.
double KlDivergence(const float* ref, double ref_lse, const float* model, double model_lse, int64_t vocab) {
  double kl = 0.0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double log_p = static_cast<double>(ref[v]) - ref_lse;
    const double p = std::exp(log_p);
    if (p == 0.0) continue;
    kl += p * (log_p - (static_cast<double>(model[v]) - model_lse));
  }
  // Rounding can leave a tiny negative sum for identical distributions; KL is non-negative.
  return std::max(kl, 0.0);
}

}  // namespace

std::string EvaluationProtocol::Describe(int64_t total_tokens) const {
  std::string s = absl::StrCat("context ", context_length, ", stride ", stride,
                               stride == context_length ? " (disjoint windows)" : " (sliding windows)");
  if (max_tokens > 0 && max_tokens < total_tokens) {
    absl::StrAppend(&s, ", first ", max_tokens, " of ", total_tokens, " tokens");
  } else {
    absl::StrAppend(&s, ", all ", total_tokens, " tokens");
  }
  return s;
}

absl::StatusOr<std::vector<EvaluationWindow>> MakeEvaluationWindows(int64_t num_tokens, int context_length,
                                                                    int stride) {
  if (context_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat("context_length: ", context_length, " must be >= 2"));
  }
  if (stride < 1 || stride > context_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("stride: ", stride, " is outside [1, context_length = ", context_length, "]"));
  }
  if (num_tokens < 2) {
    return absl::InvalidArgumentError(absl::StrCat("ids: ", num_tokens, " tokens, evaluation needs at least 2"));
  }
  std::vector<EvaluationWindow> windows;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < num_tokens; begin += stride) {
    EvaluationWindow w;
    w.begin = begin;
    w.end = std::min(num_tokens, begin + context_length);
    w.first_target = std::max(prev_end, begin + 1);
    // A trailing window of a single token has nothing to score; its token is the previous window's.
    if (w.first_target < w.end) windows.push_back(w);
    prev_end = w.end;
    if (w.end == num_tokens) break;
  }
  return windows;
}

double ModelScoreSums::Perplexity() const {
  return targets == 0 ? 0.0 : std::exp(nll_sum / static_cast<double>(targets));
}
double ModelScoreSums::Top1Accuracy() const {
  return targets == 0 ? 0.0 : static_cast<double>(top1_correct) / static_cast<double>(targets);
}
double EvaluationResult::MeanKl() const { return targets == 0 ? 0.0 : kl_sum / static_cast<double>(targets); }
double EvaluationResult::Top1Agreement() const {
  return targets == 0 ? 0.0 : static_cast<double>(top1_agree) / static_cast<double>(targets);
}

absl::StatusOr<EvaluationResult> EvaluateModels(const DecoderModel& model, const DecoderModel* reference,
                                                absl::Span<const int32_t> all_ids,
                                                const EvaluationProtocol& protocol,
                                                const EvaluationProgress& progress) {
  const int64_t vocab = model.vocab_size();
  if (reference != nullptr && reference->vocab_size() != vocab) {
    return absl::InvalidArgumentError(absl::StrCat("reference: vocabulary of ", reference->vocab_size(),
                                                   " tokens, the model has ", vocab));
  }
  BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const int32_t> ids, Prefix(all_ids, protocol));
  BITLOOM_RETURN_IF_ERROR(CheckIds(ids, vocab));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<EvaluationWindow> windows,
                           MakeEvaluationWindows(static_cast<int64_t>(ids.size()), protocol.context_length,
                                                 protocol.stride));
  const int64_t total_targets = CountTargets(windows);
  const int64_t chunk = std::max(1, protocol.chunk_tokens);

  EvaluationResult result;
  result.has_reference = reference != nullptr;
  result.has_divergence = reference != nullptr;
  std::vector<int32_t> positions;
  for (const EvaluationWindow& w : windows) {
    const int capacity = static_cast<int>(w.end - w.begin);
    KvCache cache = model.NewKvCache(capacity);
    std::optional<KvCache> ref_cache;
    if (reference != nullptr) ref_cache.emplace(reference->NewKvCache(capacity));
    // Token i (absolute) predicts target i + 1; the window's last token predicts nothing and is not run.
    for (int64_t begin = w.begin; begin < w.end - 1; begin += chunk) {
      const int64_t end = std::min(w.end - 1, begin + chunk);
      positions.resize(static_cast<size_t>(end - begin));
      std::iota(positions.begin(), positions.end(), static_cast<int32_t>(begin - w.begin));
      const absl::Span<const int32_t> tokens = ids.subspan(begin, end - begin);
      // Chunks before the first target only fill the caches.
      const auto which = end >= w.first_target ? DecoderModel::Logits::kAll : DecoderModel::Logits::kNone;
      BITLOOM_ASSIGN_OR_RETURN(const std::vector<float> logits, model.Forward(tokens, positions, cache, which));
      std::vector<float> ref_logits;
      if (reference != nullptr) {
        BITLOOM_ASSIGN_OR_RETURN(ref_logits, reference->Forward(tokens, positions, *ref_cache, which));
      }
      if (which == DecoderModel::Logits::kNone) continue;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t = i + 1;
        if (t < w.first_target) continue;
        const int32_t target = ids[t];
        const float* row = logits.data() + (i - begin) * vocab;
        const RowStats s = Stats(row, vocab);
        result.model.nll_sum -= static_cast<double>(row[target]) - s.lse;
        result.model.top1_correct += s.argmax == target;
        ++result.model.targets;
        ++result.targets;
        if (reference == nullptr) continue;
        const float* ref_row = ref_logits.data() + (i - begin) * vocab;
        const RowStats r = Stats(ref_row, vocab);
        result.reference.nll_sum -= static_cast<double>(ref_row[target]) - r.lse;
        result.reference.top1_correct += r.argmax == target;
        ++result.reference.targets;
        const double kl = KlDivergence(ref_row, r.lse, row, s.lse, vocab);
        result.kl_sum += kl;
        result.kl_max = std::max(result.kl_max, kl);
        result.top1_agree += s.argmax == r.argmax;
      }
    }
    ++result.windows;
    if (progress) progress(result.targets, total_targets);
  }
  return result;
}

absl::StatusOr<EvaluationResult> EvaluateScorers(const WindowScorer& model, const WindowScorer* reference,
                                                 absl::Span<const int32_t> all_ids,
                                                 const EvaluationProtocol& protocol,
                                                 const EvaluationProgress& progress) {
  BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const int32_t> ids, Prefix(all_ids, protocol));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<EvaluationWindow> windows,
                           MakeEvaluationWindows(static_cast<int64_t>(ids.size()), protocol.context_length,
                                                 protocol.stride));
  const int64_t total_targets = CountTargets(windows);
  EvaluationResult result;
  result.has_reference = reference != nullptr;
  auto accumulate = [](const WindowScorer& scorer, const char* which, absl::Span<const int32_t> window_ids,
                       int64_t first, ModelScoreSums& sums) -> absl::Status {
    BITLOOM_ASSIGN_OR_RETURN(const TokenScores scores, scorer(window_ids));
    const size_t expected = window_ids.size() - 1;
    if (scores.logprobs.size() != expected || scores.greedy.size() != expected) {
      return absl::InternalError(absl::StrCat(which, " scorer returned ", scores.logprobs.size(), " logprobs and ",
                                              scores.greedy.size(), " greedy flags for ", window_ids.size(),
                                              " ids (expected ", expected, ")"));
    }
    // logprobs[i] scores window target i + 1; targets from `first` (window-relative) on.
    for (size_t i = static_cast<size_t>(first - 1); i < expected; ++i) {
      sums.nll_sum -= static_cast<double>(scores.logprobs[i]);
      sums.top1_correct += scores.greedy[i] ? 1 : 0;
      ++sums.targets;
    }
    return absl::OkStatus();
  };
  for (const EvaluationWindow& w : windows) {
    const absl::Span<const int32_t> window_ids = ids.subspan(w.begin, w.end - w.begin);
    const int64_t first = w.first_target - w.begin;
    BITLOOM_RETURN_IF_ERROR(accumulate(model, "model", window_ids, first, result.model));
    if (reference != nullptr) {
      BITLOOM_RETURN_IF_ERROR(accumulate(*reference, "reference", window_ids, first, result.reference));
    }
    result.targets = result.model.targets;
    ++result.windows;
    if (progress) progress(result.targets, total_targets);
  }
  return result;
}

}  // namespace bitloom::engine
