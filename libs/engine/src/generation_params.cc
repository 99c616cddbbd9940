#include "bitloom/engine/generation_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace bitloom::engine {

GenerationParams GenerationParams::FromProto(const v1::SamplingParams& p) {
  GenerationParams g;
  g.temperature = p.temperature();
  g.top_k = p.top_k();
  g.top_p = p.top_p();
  g.min_p = p.min_p();
  g.repetition_penalty = p.repetition_penalty();
  g.presence_penalty = p.presence_penalty();
  g.frequency_penalty = p.frequency_penalty();
  g.seed = p.seed();
  g.stop.assign(p.stop().begin(), p.stop().end());
  g.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  g.max_new_tokens = p.max_new_tokens();
  g.top_logprobs = p.top_logprobs();
  g.logprobs = p.logprobs();
  g.ignore_eos = p.ignore_eos();
  return g;
}

absl::Status GenerationParams::Validate(uint32_t vocab_size) const {
  auto bad = [](const char* field, auto value, const char* range) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value, " is outside ", range));
  };
  // NaN fails every comparison below, so each check is written as "inside the range" and negated.
  if (!(temperature >= 0.0f && temperature <= 2.0f)) return bad("temperature", temperature, "[0, 2]");
  if (top_k > vocab_size) return bad("top_k", top_k, absl::StrCat("0 (off) or [1, ", vocab_size, "]").c_str());
  if (!(top_p >= 0.0f && top_p <= 1.0f)) return bad("top_p", top_p, "(0, 1]");
  if (!(min_p >= 0.0f && min_p < 1.0f)) return bad("min_p", min_p, "[0, 1)");
  if (!(repetition_penalty == 0.0f || (repetition_penalty >= 0.5f && repetition_penalty <= 2.0f))) {
    return bad("repetition_penalty", repetition_penalty, "0 (off) or [0.5, 2]");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) return bad("presence_penalty", presence_penalty, "[-2, 2]");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", frequency_penalty, "[-2, 2]");
  }
  if (stop.size() > 16) return bad("stop", absl::StrCat(stop.size(), " strings"), "[0, 16]");
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty() || stop[i].size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "]: length ", stop[i].size(), " is outside [1, 256] bytes"));
    }
  }
  if (stop_token_ids.size() > 64) return bad("stop_token_ids", absl::StrCat(stop_token_ids.size(), " ids"), "[0, 64]");
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "]: ", stop_token_ids[i],
                                                     " is outside [0, ", vocab_size, ")"));
    }
  }
  if (top_logprobs > 20) return bad("top_logprobs", top_logprobs, "[0, 20]");
  return absl::OkStatus();
}

}  // namespace bitloom::engine
