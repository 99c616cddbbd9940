// EmbeddingF32: out[t] = table[ids[t]] · scale, the token-embedding lookup.
//
// scale is 1 for most models and √hidden for Gemma (already rounded to fp32 by the caller, matching
// transformers when the model runs in fp32). An id outside [0, vocab) is INVALID_ARGUMENT naming the id,
// never an out-of-bounds read.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::kernels {

struct EmbeddingParams {
  const float* table = nullptr;  // [vocab, dim]
  const int32_t* ids = nullptr;  // [tokens]
  float* out = nullptr;          // [tokens, dim]
  int64_t vocab = 0;
  int64_t dim = 0;
  int64_t tokens = 0;
  float scale = 1.0f;
};

absl::Status EmbeddingF32(const EmbeddingParams& params);

}  // namespace bitloom::kernels
