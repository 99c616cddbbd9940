// Small element-wise kernels the GPU decoder needs between the shared ops of kernels/cuda and that
// belong to no op of their own: widening an fp32 activation to the fp16 input of a cuBLAS linear,
// adding a linear's bias (Qwen2's q/k/v, Llama's optional o_proj bias) and the final logit
// soft-capping (Gemma). Private to bitloom::engine_cuda.
//
// Each launcher follows the kernel contract: asynchronous on `stream`, no allocation, no
// synchronisation, a fixed launch configuration for a given shape (graph-capturable); INVALID_ARGUMENT
// for a bad shape or null pointer, INTERNAL for a launch error. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::engine::gpu {

// out[r][c] = fp16(in[r][c]) (round to nearest even) for r < rows, c < cols.
struct RowsToF16Params {
  const float* in = nullptr;  // device [rows, in_stride] fp32
  int64_t in_stride = 0;      // elements, >= cols
  uint16_t* out = nullptr;    // device [rows, out_stride] fp16 bits
  int64_t out_stride = 0;     // elements, >= cols
  int64_t rows = 0;
  int64_t cols = 0;
};
absl::Status LaunchRowsToF16(const RowsToF16Params& params, cudaStream_t stream);

// y[r][c] += bias[c] (one fp32 add, as MatmulF32 adds its bias after the dot product).
struct AddBiasParams {
  float* y = nullptr;            // device [rows, stride] fp32
  int64_t stride = 0;            // elements, >= cols
  const float* bias = nullptr;   // device [cols] fp32
  int64_t rows = 0;
  int64_t cols = 0;
};
absl::Status LaunchAddBias(const AddBiasParams& params, cudaStream_t stream);

// x[r][c] = cap · tanh(x[r][c] / cap), evaluated in double and rounded once (SoftcapF32's arithmetic).
struct SoftcapParams {
  float* x = nullptr;  // device [rows, stride] fp32
  int64_t stride = 0;  // elements, >= cols
  int64_t rows = 0;
  int64_t cols = 0;
  float cap = 0.0f;  // > 0
};
absl::Status LaunchSoftcap(const SoftcapParams& params, cudaStream_t stream);

}  // namespace bitloom::engine::gpu
