// GenerationParams: how to pick tokens and when to stop, mirroring bitloom.v1.SamplingParams field for
// field (inference.proto), including its "0 means off / default" conventions, so the service converts a
// request with FromProto() and reports Validate()'s message to the client unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bitloom/v1/inference.pb.h"

namespace bitloom::engine {

struct GenerationParams {
  float temperature = 0.0f;         // [0, 2]; 0: greedy (argmax after penalties)
  uint32_t top_k = 0;               // 0: off; else 1..vocab_size
  float top_p = 0.0f;               // (0, 1]; 0: off (= 1)
  float min_p = 0.0f;               // [0, 1); 0: off
  float repetition_penalty = 0.0f;  // [0.5, 2]; 0: off (= 1)
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  uint64_t seed = 0;                // 0: a random seed per request
  std::vector<std::string> stop;    // ≤ 16 strings of 1..256 bytes; matched on text by the caller
  std::vector<uint32_t> stop_token_ids;  // ≤ 64; the model's EOS ids stop generation too
  uint32_t max_new_tokens = 0;      // 0: up to the context length
  uint32_t top_logprobs = 0;        // 0..20
  bool logprobs = false;
  bool ignore_eos = false;          // keep going past EOS (benchmarks)

  static GenerationParams FromProto(const v1::SamplingParams& proto);

  // INVALID_ARGUMENT naming the first bad field and its limit, e.g. "top_p: 1.5 is outside (0, 1]".
  // top_k and stop_token_ids are checked against vocab_size.
  absl::Status Validate(uint32_t vocab_size) const;

  // The effective values behind the "0 means off" conventions.
  float EffectiveTopP() const { return top_p == 0.0f ? 1.0f : top_p; }
  float EffectiveRepetitionPenalty() const { return repetition_penalty == 0.0f ? 1.0f : repetition_penalty; }
};

}  // namespace bitloom::engine
