// MatmulF32: y = x · wᵀ (+ bias), the linear layer of the CPU reference engine.
//
// Weights are in Hugging Face orientation, [out_features, in_features] row-major, so every output is
// a dot product of two contiguous rows, computed in exactly the order of src/dot.h's DotF32 (8 fp32
// lanes, pairwise reduction) whatever m, the tiling or the thread count: row i of y is bit-identical
// whether x has 1 row or 500. The kernel is register-tiled (4 activation rows × 4 weight rows) and
// cache-blocked over k around that order (docs/ENGINE.md, "The matmul"). Threads split the output
// features; the caller's pool may be null (single-threaded).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

struct MatmulF32Params {
  const float* x = nullptr;     // [m, k] activations, row stride k
  const float* w = nullptr;     // [n, k] weight, row-major (out_features, in_features)
  const float* bias = nullptr;  // [n], or null for none
  float* y = nullptr;           // [m, n] output, row stride n; must not alias x or w
  int64_t m = 0;                // rows (tokens)
  int64_t n = 0;                // output features
  int64_t k = 0;                // input features
};

// INVALID_ARGUMENT for a null pointer or a negative dimension; m == 0 or n == 0 is a no-op.
absl::Status MatmulF32(const MatmulF32Params& params, ThreadPool* pool);

}  // namespace bitloom::kernels
