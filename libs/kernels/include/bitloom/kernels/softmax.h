// Row softmax and log-sum-exp over logits, fp32 in and out with double accumulation.
//
// Used by the sampler (probabilities over the vocabulary), by scoring and perplexity (log-probabilities)
// and as the naive reference for the fused softmax inside attention. Max-subtracted, so large logits
// never overflow; a row of all -inf yields NaN (there is no distribution to return).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

struct SoftmaxParams {
  const float* x = nullptr;  // [rows, cols] logits
  float* y = nullptr;        // [rows, cols] probabilities (or log-probabilities); may equal x
  int64_t rows = 0;
  int64_t cols = 0;
  bool log = false;          // write log-softmax instead of softmax
};

absl::Status SoftmaxF32(const SoftmaxParams& params, ThreadPool* pool);

// log(sum_i exp(x[i])) for one row of n > 0 values, in double.
double LogSumExpF32(const float* x, int64_t n);

}  // namespace bitloom::kernels
