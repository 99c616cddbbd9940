// The pre-norm step of every decoder block on the GPU: the residual add fused with RMSNorm. For each
// token row t of the fp32 residual stream,
//   residual[t] += delta[t]                                   (only when delta is given)
//   out[t] = residual[t] / sqrt(mean(residual[t]²) + eps) · (weight + weight_offset)
// with out written in fp32, fp16 or both (the fp16 copy feeds the Hadamard rotation of the next
// GEMV; the fp32 copy is for the final norm before the LM head or for Gemma's sandwich norms).
// The arithmetic is RmsNormF32's (kernels/rms_norm.h): the mean of squares accumulates in double and
// each output is (x · inv_rms) · (w + offset) in fp32, so the fp32 output equals the CPU's up to the
// order of the double sum (in practice bit for bit). Gemma's norm-then-add sandwich is two calls: the
// post-norm with no delta, then this add+norm with the normalised output as delta.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`, allocates
// nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::kernels::cuda {

struct ResidualRmsNormParams {
  float* residual = nullptr;      // device [tokens, hidden] fp32; += delta in place when delta != null
  const float* delta = nullptr;   // device [tokens, delta_stride] fp32, or null (norm only)
  int64_t delta_stride = 0;       // elements, >= hidden when delta is given (a GEMV's y_stride)
  const float* weight = nullptr;  // device [hidden] fp32
  float weight_offset = 0.0f;     // 0: x·w (Llama, Qwen, Mistral); 1: x·(1 + w) (Gemma)
  float eps = 1e-6f;
  float* out_f32 = nullptr;       // device [tokens, hidden] fp32, or null; may equal residual
  uint16_t* out_f16 = nullptr;    // device [tokens, hidden] fp16 (IEEE bits), or null
  int64_t tokens = 0;             // rows; 0 is a no-op
  int64_t hidden = 0;             // 1..kMaxNormHidden
};

inline constexpr int64_t kMaxNormHidden = int64_t{1} << 20;

// INVALID_ARGUMENT for a non-positive or too large hidden, negative tokens, a null residual or
// weight, a delta_stride < hidden, or a call with neither a delta nor an output (nothing to do);
// INTERNAL for a CUDA launch error.
absl::Status LaunchResidualRmsNorm(const ResidualRmsNormParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
