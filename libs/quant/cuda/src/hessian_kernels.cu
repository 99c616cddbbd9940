// Element-wise kernels of the GPU Hessian path (declared and specified in hessian_kernels.h).
//
// Layout: every kernel here is a grid-stride loop over the n² (or rows·cols) elements of a dense
// row-major matrix, 256 threads per CTA, one element per thread per step, so consecutive threads
// touch consecutive addresses (coalesced). They are memory-bound and run once per Hessian flush or
// factorisation, never per column. LaunchRowDot is the one reduction: a CTA per row, each thread
// summing a strided slice in order, then a fixed shared-memory tree, so the result does not depend
// on scheduling.
#include <cuda_fp16.h>

#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/scalar_codec.h"
#include "hessian_kernels.h"

namespace bitloom::quant::cuda::internal {
namespace {

constexpr int kThreads = 256;

int GridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

__global__ void FoldPartialKernel(const float* partial, double* sum, int64_t n) {
  const int64_t total = n * n;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / n, j = k - i * n;
    if (j >= i) sum[k] += static_cast<double>(partial[k]);
  }
}

__global__ void WriteMeanKernel(const double* sum, double inv_rows, double* out, int64_t n) {
  const int64_t total = n * n;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / n, j = k - i * n;
    // The CPU's Mean(): sum · (1/rows), one rounding, mirrored to the lower triangle.
    out[k] = (j >= i ? sum[k] : sum[j * n + i]) * inv_rows;
  }
}

__global__ void BuildReversedDampedKernel(const double* h, const double* diag, double shift,
                                          bool diagonal_only, double* a, int64_t n) {
  const int64_t total = n * n;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / n, j = k - i * n;
    const int64_t si = n - 1 - i, sj = n - 1 - j;
    double v = diagonal_only ? 0.0 : h[si * n + sj];
    if (i == j) v = diag[si] + shift;
    a[k] = v;
  }
}

__global__ void FlagNonFiniteKernel(const double* a, int64_t count, int* flag) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < count;
       k += int64_t{gridDim.x} * blockDim.x) {
    if (!isfinite(a[k])) *flag = 1;  // a benign race: every writer writes 1
  }
}

__global__ void SetIdentityKernel(double* a, int64_t n) {
  const int64_t total = n * n;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / n, j = k - i * n;
    a[k] = i == j ? 1.0 : 0.0;
  }
}

__global__ void ReverseToUpperKernel(const double* x, float* u32, double* u64, int64_t n) {
  const int64_t total = n * n;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / n, j = k - i * n;
    const double v = j >= i ? x[total - 1 - k] : 0.0;
    u32[k] = static_cast<float>(v);
    if (u64 != nullptr) u64[k] = v;
  }
}

__global__ void RowDotKernel(const double* a, const double* b, int64_t n, double* out) {
  __shared__ double partial[kThreads];
  const int64_t r = blockIdx.x;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) s += a[r * n + j] * b[r * n + j];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[r] = partial[0];
}

__global__ void DeltaToF64Kernel(const float* w, const uint8_t* codes, const uint16_t* scales,
                                 int bits, int group_size, int64_t groups_per_row, int64_t rows,
                                 int64_t cols, double* out) {
  const int64_t total = rows * cols;
  const float center = kernels::ScalarGridCenter(bits);
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    float d = w[k];
    if (codes != nullptr) {
      const int64_t r = k / cols, c = k - r * cols;
      const float s = __half2float(__ushort_as_half(scales[r * groups_per_row + c / group_size]));
      // The decoder's arithmetic (scale · (q − center), fp32), then the CPU's Δ = w − q in fp32.
      const float q = __fmul_rn(s, __fsub_rn(static_cast<float>(codes[k]), center));
      d = __fsub_rn(d, q);
    }
    out[k] = static_cast<double>(d);
  }
}

}  // namespace

absl::Status LaunchFoldPartial(const float* partial, double* sum, int64_t n, cudaStream_t stream) {
  FoldPartialKernel<<<GridFor(n * n), kThreads, 0, stream>>>(partial, sum, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchWriteMean(const double* sum, double inv_rows, double* out, int64_t n,
                             cudaStream_t stream) {
  WriteMeanKernel<<<GridFor(n * n), kThreads, 0, stream>>>(sum, inv_rows, out, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchBuildReversedDamped(const double* h, const double* diag, double shift,
                                       bool diagonal_only, double* a, int64_t n,
                                       cudaStream_t stream) {
  BuildReversedDampedKernel<<<GridFor(n * n), kThreads, 0, stream>>>(h, diag, shift,
                                                                      diagonal_only, a, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchFlagNonFinite(const double* a, int64_t count, int* flag,
                                 cudaStream_t stream) {
  FlagNonFiniteKernel<<<GridFor(count), kThreads, 0, stream>>>(a, count, flag);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchSetIdentity(double* a, int64_t n, cudaStream_t stream) {
  SetIdentityKernel<<<GridFor(n * n), kThreads, 0, stream>>>(a, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchReverseToUpper(const double* x, float* u32, double* u64, int64_t n,
                                  cudaStream_t stream) {
  ReverseToUpperKernel<<<GridFor(n * n), kThreads, 0, stream>>>(x, u32, u64, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchRowDot(const double* a, const double* b, int64_t rows, int64_t n, double* out,
                          cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  RowDotKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(a, b, n, out);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchDeltaToF64(const float* w, const uint8_t* codes, const uint16_t* scales,
                              int bits, int group_size, int64_t groups_per_row, int64_t rows,
                              int64_t cols, double* out, cudaStream_t stream) {
  DeltaToF64Kernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(
      w, codes, scales, bits, group_size, groups_per_row, rows, cols, out);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda::internal
