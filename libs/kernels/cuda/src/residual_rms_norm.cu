// Fused residual add + RMSNorm (see residual_rms_norm.h).
//
// Layout: one thread block per token row, threads strided over the row (coalesced fp32 loads):
// thread i owns elements i, i + threads, i + 2·threads, ...
//   Rows of at most kHeld·threads elements (8192 at 1024 threads) stay in registers. The norm
//   weights are constant, so they are loaded before the wait for the kernels ahead; after it,
//   every residual and delta element of the thread is loaded at once (one L2 round trip, not one
//   per element: a store between loads would keep the compiler from batching them, since the
//   pointers may alias), added, stored back and squared into Σx² (double); BlockSum; then
//   (x · inv_rms) · (w + offset) from registers. In a decode step the kernel is latency-bound;
//   this leaves two memory round trips after the wait where the loop form had two per element.
//   (kHeld = 16 would need more than the 64 registers per thread a 1024-thread block allows.)
//   Wider rows: the same two passes as loops, the second re-reading its own elements (each thread
//   only its own, so no barrier between its write and its read; out_f32 == residual is safe).
// Threads: 1024 for hidden > 2048, 256 below.
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

constexpr int kHeld = 8;  // elements per thread kept in registers
constexpr int kMaxThreads = 1024;

__device__ __forceinline__ void StoreNormalized(const ResidualRmsNormParams& p, int64_t t, int i, float y) {
  if (p.out_f32 != nullptr) p.out_f32[t * p.hidden + i] = y;
  if (p.out_f16 != nullptr) reinterpret_cast<__half*>(p.out_f16)[t * p.hidden + i] = __float2half_rn(y);
}

__global__ void __launch_bounds__(kMaxThreads) ResidualRmsNormKernel(ResidualRmsNormParams p) {
  detail::AllowDependentLaunch();
  const int64_t t = blockIdx.x;
  const int hidden = static_cast<int>(p.hidden);
  const int stride = static_cast<int>(blockDim.x);
  float* row = p.residual + t * p.hidden;
  const float* delta = p.delta != nullptr ? p.delta + t * p.delta_stride : nullptr;
  const bool out = p.out_f32 != nullptr || p.out_f16 != nullptr;

  if (hidden <= kHeld * stride) {
    float w[kHeld];
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * stride;
      w[k] = out && i < hidden ? __fadd_rn(p.weight[i], p.weight_offset) : 0.0f;
    }
    detail::WaitForPredecessorsAfter(__float_as_uint(w[0]));
    float x[kHeld], d[kHeld];
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * stride;
      x[k] = i < hidden ? row[i] : 0.0f;
      d[k] = delta != nullptr && i < hidden ? delta[i] : 0.0f;
    }
    double sum_sq = 0.0;
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * stride;
      if (i < hidden) {
        if (delta != nullptr) {
          x[k] = __fadd_rn(x[k], d[k]);
          row[i] = x[k];
        }
        sum_sq += static_cast<double>(x[k]) * static_cast<double>(x[k]);  // exact product: no FMA
      }
    }
    const float inv_rms = detail::InvRms(detail::BlockSum(sum_sq), hidden, p.eps);
    if (!out) return;
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * stride;
      if (i < hidden) StoreNormalized(p, t, i, __fmul_rn(__fmul_rn(x[k], inv_rms), w[k]));
    }
    return;
  }

  detail::WaitForPredecessors();
  double sum_sq = 0.0;
  for (int i = threadIdx.x; i < hidden; i += stride) {
    float x = row[i];
    if (delta != nullptr) {
      x = __fadd_rn(x, delta[i]);
      row[i] = x;
    }
    sum_sq += static_cast<double>(x) * static_cast<double>(x);
  }
  const float inv_rms = detail::InvRms(detail::BlockSum(sum_sq), hidden, p.eps);
  if (!out) return;
  for (int i = threadIdx.x; i < hidden; i += stride) {
    StoreNormalized(p, t, i, __fmul_rn(__fmul_rn(row[i], inv_rms), __fadd_rn(p.weight[i], p.weight_offset)));
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
  const int threads = p.hidden > 2048 ? kMaxThreads : 256;
  return detail::LaunchKernel({dim3(static_cast<unsigned>(p.tokens)), dim3(threads)}, stream,
                              ResidualRmsNormKernel, p);
}

}  // namespace bitloom::kernels::cuda
