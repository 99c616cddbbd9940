// Element-wise glue kernels of the GPU decoder (see gpu_decoder_ops.h).
//
// Layout (all three): a 2-D grid, blockIdx.y = row (rows above 65535 loop), blockIdx.x·256 +
// threadIdx.x = column, one element per thread, coalesced along the row. They are bandwidth-bound
// and touch a few KB per token, so nothing is staged or vectorised.

#include <cuda_fp16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "gpu_decoder_ops.h"

namespace bitloom::engine::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

dim3 Grid(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
              static_cast<unsigned>(std::min(rows, kMaxGridY)));
}

absl::Status CheckShape(const char* who, int64_t rows, int64_t cols, int64_t stride_a, int64_t stride_b) {
  if (rows < 0 || cols < 1 || cols > (int64_t{1} << 30) || stride_a < cols || stride_b < cols) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": rows ", rows, " cols ", cols, " strides ", stride_a,
                                                   ", ", stride_b, " (rows >= 0, 1 <= cols <= strides)"));
  }
  return absl::OkStatus();
}

__global__ void RowsToF16Kernel(RowsToF16Params p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= p.cols) return;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    reinterpret_cast<__half*>(p.out)[r * p.out_stride + c] = __float2half_rn(p.in[r * p.in_stride + c]);
  }
}

__global__ void AddBiasKernel(AddBiasParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= p.cols) return;
  const float b = p.bias[c];
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    p.y[r * p.stride + c] = __fadd_rn(p.y[r * p.stride + c], b);
  }
}

__global__ void SoftcapKernel(SoftcapParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= p.cols) return;
  const double cap = p.cap;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    float& x = p.x[r * p.stride + c];
    x = static_cast<float>(cap * tanh(static_cast<double>(x) / cap));
  }
}

}  // namespace

absl::Status LaunchRowsToF16(const RowsToF16Params& p, cudaStream_t stream) {
  if (absl::Status s = CheckShape("LaunchRowsToF16", p.rows, p.cols, p.in_stride, p.out_stride); !s.ok()) return s;
  if (p.in == nullptr || p.out == nullptr) return absl::InvalidArgumentError("LaunchRowsToF16: null in or out");
  if (p.rows == 0) return absl::OkStatus();
  RowsToF16Kernel<<<Grid(p.rows, p.cols), kThreads, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAddBias(const AddBiasParams& p, cudaStream_t stream) {
  if (absl::Status s = CheckShape("LaunchAddBias", p.rows, p.cols, p.stride, p.stride); !s.ok()) return s;
  if (p.y == nullptr || p.bias == nullptr) return absl::InvalidArgumentError("LaunchAddBias: null y or bias");
  if (p.rows == 0) return absl::OkStatus();
  AddBiasKernel<<<Grid(p.rows, p.cols), kThreads, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchSoftcap(const SoftcapParams& p, cudaStream_t stream) {
  if (absl::Status s = CheckShape("LaunchSoftcap", p.rows, p.cols, p.stride, p.stride); !s.ok()) return s;
  if (p.x == nullptr || !(p.cap > 0.0f)) return absl::InvalidArgumentError("LaunchSoftcap: null x or cap <= 0");
  if (p.rows == 0) return absl::OkStatus();
  SoftcapKernel<<<Grid(p.rows, p.cols), kThreads, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitloom::engine::gpu
