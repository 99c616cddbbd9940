// PrefetchL2: a kernel's share of an L2Prefetch (bitloom/kernels/cuda/l2_prefetch.h).
//
// Layout: each range is cut into pieces of kL2PrefetchPiece bytes; piece i goes to thread
// (i mod threads in the grid), so a kernel of a few blocks still spreads the requests over its
// threads, one instruction each, and no thread waits for anything (the prefetch completes on its own
// after the kernel ends). Call it from every thread after AllowDependentLaunch: the weights do not
// depend on the kernel ahead, so there is no reason to wait for it first.
#pragma once

#include <cstdint>

#include "bitloom/kernels/cuda/l2_prefetch.h"

namespace bitloom::kernels::cuda::detail {

inline constexpr uint64_t kL2PrefetchPiece = 16 * 1024;

__device__ __forceinline__ void PrefetchL2(const L2Prefetch& prefetch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint64_t threads = uint64_t{blockDim.x} * blockDim.y * blockDim.z;
  const uint64_t block =
      (uint64_t{blockIdx.z} * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const uint64_t stride = threads * gridDim.x * gridDim.y * gridDim.z;
  const uint64_t self =
      block * threads + (uint64_t{threadIdx.z} * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
#pragma unroll
  for (int r = 0; r < kMaxL2PrefetchRanges; ++r) {
    if (prefetch.ranges[r].data == nullptr || prefetch.ranges[r].bytes < 16) continue;
    const uint64_t start = __cvta_generic_to_global(prefetch.ranges[r].data);
    const uint64_t begin = (start + 15) & ~uint64_t{15};
    const uint64_t end = (start + prefetch.ranges[r].bytes) & ~uint64_t{15};
    if (end <= begin) continue;
    const uint64_t pieces = (end - begin + kL2PrefetchPiece - 1) / kL2PrefetchPiece;
    for (uint64_t i = self; i < pieces; i += stride) {
      const uint64_t at = begin + i * kL2PrefetchPiece;
      const uint32_t size = static_cast<uint32_t>(end - at < kL2PrefetchPiece ? end - at : kL2PrefetchPiece);
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(at), "r"(size) : "memory");
    }
  }
#else
  (void)prefetch;
#endif
}

}  // namespace bitloom::kernels::cuda::detail
