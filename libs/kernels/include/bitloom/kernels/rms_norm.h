// RmsNormF32: y = x / sqrt(mean(x²) + eps) · (weight + weight_offset), row by row.
//
// weight_offset is 0 for Llama-family norms and 1 for Gemma, whose checkpoints store w and apply
// x · (1 + w). The mean of squares is accumulated in double: a norm is cheap and its scale multiplies
// every element of the row, so it is worth being exact. In-place (y == x) is allowed. Also used per
// attention head for Qwen3/Gemma 3 Q/K norms (rows = tokens · heads, dim = head_dim).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

struct RmsNormParams {
  const float* x = nullptr;       // [rows, dim]
  const float* weight = nullptr;  // [dim]
  float* y = nullptr;             // [rows, dim]; may equal x
  int64_t rows = 0;
  int64_t dim = 0;
  float eps = 1e-6f;
  float weight_offset = 0.0f;     // 0: x·w (Llama, Qwen); 1: x·(1 + w) (Gemma)
};

absl::Status RmsNormF32(const RmsNormParams& params, ThreadPool* pool);

}  // namespace bitloom::kernels
