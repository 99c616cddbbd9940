// Fused residual add + RMSNorm (see residual_rms_norm.h).
//
// Layout: one thread block per token row, threads strided over the row (coalesced fp32 loads).
// Pass 1 adds delta, writes the new residual and accumulates Σx² in double (each thread its own
// elements, then BlockSum); pass 2 re-reads the same elements (each thread only its own, so no
// barrier is needed between its write and its read, and in-place out_f32 == residual is safe) and
// writes (x · inv_rms) · (w + offset). The second read hits L1/L2: a row is at most a few tens of
// KB. Memory-bound, so no shared-memory staging and no vector loads: a decode step has 1-8 rows and
// the kernel is launch-latency bound; prefill rows are many and independent.
// Threads: 1024 for hidden ≥ 4096 (4-16 elements each up to 16384), 256 below.
// Rounding: explicit __f*_rn intrinsics keep nvcc from contracting into FMAs the CPU does not use.

#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/residual_rms_norm.h"
#include "block_reduce.cuh"
#include "dependent_launch.cuh"
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

__global__ void ResidualRmsNormKernel(ResidualRmsNormParams p) {
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  const int64_t t = blockIdx.x;
  const int hidden = static_cast<int>(p.hidden);
  float* row = p.residual + t * p.hidden;
  const float* delta = p.delta != nullptr ? p.delta + t * p.delta_stride : nullptr;

  double sum_sq = 0.0;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float x = row[i];
    if (delta != nullptr) {
      x = __fadd_rn(x, delta[i]);
      row[i] = x;
    }
    sum_sq += static_cast<double>(x) * static_cast<double>(x);  // exact product: no FMA question
  }
  sum_sq = detail::BlockSum(sum_sq);
  // RmsNormF32: 1 / sqrt(Σx²/dim + eps) in double, rounded once to fp32.
  const float inv_rms = static_cast<float>(
      1.0 / sqrt(sum_sq / static_cast<double>(hidden) + static_cast<double>(p.eps)));

  if (p.out_f32 == nullptr && p.out_f16 == nullptr) return;
  float* out32 = p.out_f32 != nullptr ? p.out_f32 + t * p.hidden : nullptr;
  __half* out16 =
      p.out_f16 != nullptr ? reinterpret_cast<__half*>(p.out_f16) + t * p.hidden : nullptr;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float y = __fmul_rn(__fmul_rn(row[i], inv_rms), __fadd_rn(p.weight[i], p.weight_offset));
    if (out32 != nullptr) out32[i] = y;
    if (out16 != nullptr) out16[i] = __float2half_rn(y);
  }
}

}  // namespace

absl::Status LaunchResidualRmsNorm(const ResidualRmsNormParams& p, cudaStream_t stream) {
  if (p.hidden < 1 || p.hidden > kMaxNormHidden) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchResidualRmsNorm: hidden ", p.hidden,
                                                   " outside [1, ", kMaxNormHidden, "]"));
  }
  if (p.tokens < 0 || p.tokens > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchResidualRmsNorm: tokens ", p.tokens, " outside [0, 2^31)"));
  }
  if (p.residual == nullptr || p.weight == nullptr) {
    return absl::InvalidArgumentError("LaunchResidualRmsNorm: residual and weight must be non-null");
  }
  if (p.delta != nullptr && p.delta_stride < p.hidden) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchResidualRmsNorm: delta_stride ",
                                                   p.delta_stride, " < hidden ", p.hidden));
  }
  if (p.delta == nullptr && p.out_f32 == nullptr && p.out_f16 == nullptr) {
    return absl::InvalidArgumentError(
        "LaunchResidualRmsNorm: no delta and no output: nothing to compute");
  }
  if (p.tokens == 0) return absl::OkStatus();
  const int threads = p.hidden >= 4096 ? 1024 : 256;
  return detail::LaunchKernel({dim3(static_cast<unsigned>(p.tokens)), dim3(threads)}, stream,
                              ResidualRmsNormKernel, p);
}

}  // namespace bitloom::kernels::cuda
