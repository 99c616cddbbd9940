// Block-wide sums for the element-wise kernels: a warp shuffle tree, then one value per warp through
// shared memory. Deterministic (a fixed tree for a given block size), unlike atomics. InvRms turns
// a sum of squares into RMSNorm's scale.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bitloom::kernels::cuda::detail {

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of `v` over the block; every thread gets it. blockDim.x must be a multiple of 32 (≤ 1024).
// Contains __syncthreads(): call from all threads, not in divergent code.
template <typename T>
__device__ __forceinline__ T BlockSum(T v) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  T total = lane < warps ? warp_sums[lane] : T(0);
  return WarpSum(total);
}

// RmsNormF32's 1/√(Σx²/n + eps): in double, rounded once to fp32.
__device__ __forceinline__ float InvRms(double sum_sq, int64_t n, float eps) {
  return static_cast<float>(1.0 / sqrt(sum_sq / static_cast<double>(n) + static_cast<double>(eps)));
}

}  // namespace bitloom::kernels::cuda::detail
