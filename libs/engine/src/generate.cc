#include "bitloom/engine/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/kernels/softmax.h"

namespace bitloom::engine {
namespace {

void FillLogprobs(const std::vector<float>& logits, int top_n, GeneratedToken* tok) {
  const double lse = kernels::LogSumExpF32(logits.data(), static_cast<int64_t>(logits.size()));
  tok->logprob = static_cast<float>(logits[tok->id] - lse);
  if (top_n <= 0) return;
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t n = std::min<size_t>(top_n, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (size_t i = 0; i < n; ++i) tok->top_logprobs.emplace_back(idx[i], static_cast<float>(logits[idx[i]] - lse));
}

}  // namespace

absl::StatusOr<GenerationResult> Generate(const DecoderModel& model, absl::Span<const int32_t> prompt,
                                          const GenerationParams& params, const GenerateOptions& options) {
  BITLOOM_RETURN_IF_ERROR(params.Validate(static_cast<uint32_t>(model.vocab_size())));
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= model.vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt[", i, "]: token id ", prompt[i], " is outside [0, ", model.vocab_size(), ")"));
    }
  }
  const int context = options.context_length > 0 ? options.context_length : model.resolved().max_position_embeddings;
  const int64_t prompt_len = static_cast<int64_t>(prompt.size());
  if (prompt_len >= context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", prompt_len, " tokens leave no room in the context of ",
                                                   context, " tokens"));
  }
  int64_t max_new = context - prompt_len;
  if (params.max_new_tokens > 0) {
    if (params.max_new_tokens > max_new) {
      return absl::InvalidArgumentError(absl::StrCat("max_new_tokens: ", params.max_new_tokens, " is outside [1, ",
                                                     max_new, "] (context ", context, " − prompt ", prompt_len, ")"));
    }
    max_new = params.max_new_tokens;
  }
  std::vector<int32_t> stops(params.stop_token_ids.begin(), params.stop_token_ids.end());
  if (!params.ignore_eos) stops.insert(stops.end(), options.eos_token_ids.begin(), options.eos_token_ids.end());

  Sampler sampler(params);
  GenerationResult result;
  result.seed = sampler.seed();
  // The last generated token is never run through the model, so the cache needs prompt + max_new − 1.
  KvCache cache = model.NewKvCache(static_cast<int>(prompt_len + max_new));
  std::vector<int32_t> positions(prompt_len);
  std::iota(positions.begin(), positions.end(), 0);
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> logits,
                           model.Forward(prompt, positions, cache, DecoderModel::Logits::kLast));
  std::vector<int32_t> output;
  for (int64_t step = 0;; ++step) {
    GeneratedToken tok;
    tok.id = sampler.Sample(logits, prompt, output);
    if (params.logprobs || params.top_logprobs > 0) FillLogprobs(logits, static_cast<int>(params.top_logprobs), &tok);
    output.push_back(tok.id);
    const bool keep_going = !options.on_token || options.on_token(tok);
    result.tokens.push_back(std::move(tok));
    if (std::find(stops.begin(), stops.end(), output.back()) != stops.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (!keep_going) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    if (step + 1 >= max_new) {
      result.finish_reason = FinishReason::kLength;
      break;
    }
    const int32_t pos = static_cast<int32_t>(prompt_len + step);
    BITLOOM_ASSIGN_OR_RETURN(logits, model.Forward(absl::MakeConstSpan(&output.back(), 1),
                                                   absl::MakeConstSpan(&pos, 1), cache, DecoderModel::Logits::kLast));
  }
  return result;
}

size_t StopStringMatcher::Update(const std::string& text) {
  size_t earliest = std::string::npos;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    const size_t at = text.find(s);
    if (at != std::string::npos) earliest = std::min(earliest, at);
  }
  if (earliest != std::string::npos) {
    stopped_ = true;
    return earliest;
  }
  // Hold back the longest suffix of text that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - 1, text.size()); len > hold; --len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return text.size() - hold;
}

}  // namespace bitloom::engine
