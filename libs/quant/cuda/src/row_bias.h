// The one element-wise step GpuBlockRunner needs that no shared kernel of libs/kernels/cuda has:
// adding a linear layer's bias to every row of its fp32 output (Qwen2's q/k/v biases, a Llama
// checkpoint's optional o_proj bias), one fp32 add after the product, as MatmulF32 adds it.
// Asynchronous on `stream`; allocates nothing. Private to libs/quant/cuda; plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::quant::cuda::internal {

// y[r][c] += bias[c] for r < rows, c < cols; y is [rows, cols] row-major. INVALID_ARGUMENT for
// a bad shape or null pointer; INTERNAL for a launch error.
absl::Status LaunchAddRowBias(float* y, const float* bias, int64_t rows, int64_t cols,
                              cudaStream_t stream);

}  // namespace bitloom::quant::cuda::internal
