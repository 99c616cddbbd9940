// Hopper's asynchronous bulk copy (global → shared, the TMA engine's one-dimensional form) and the
// shared-memory barriers (mbarrier) that signal its completion, as used by a ring of
// shared-memory stages that one warp fills and reads itself:
//
//   fill stage s:   ArriveExpectBytes(full[s], n); BulkCopy(..., full[s]) × k   (k copies, n bytes)
//   read stage s:   WaitBarrier(full[s], phase); read; refill only once the words are consumed
//
// `phase` is the parity of the ring's lap ((unit / stages) & 1); a fresh barrier is in phase 0.
// A bulk copy moves a multiple of 16 bytes between 16-byte aligned addresses and counts its
// bytes against the barrier's expected transaction count; the barrier's phase completes when
// its arrivals and its bytes are both in. Everything here needs sm_90; below it the functions
// trap, and hosts must not launch kernels that call them (callers check the device's SM first).
#pragma once

#include <cstdint>

#include "device_util.cuh"

namespace bitloom::kernels::cuda::detail {

// Sets up a barrier that completes a phase after `arrivals` arrivals (plus any expected bytes).
// One thread initialises; InitBarriersDone() then publishes them before any thread uses them.
__device__ __forceinline__ void InitBarrier(uint64_t* bar, uint32_t arrivals) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SharedAddress(bar)), "r"(arrivals)
               : "memory");
#else
  __trap();
#endif
}

// Makes the initialised barriers visible to the async proxy (the bulk copies); follow with
// __syncthreads().
__device__ __forceinline__ void InitBarriersDone() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// One arrival that also announces `bytes` more bytes of bulk copies for the current phase.
__device__ __forceinline__ void ArriveExpectBytes(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SharedAddress(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

// Blocks until the phase of parity `parity` has completed (acquire: the bytes it counted are
// visible to this thread).
__device__ __forceinline__ void WaitBarrier(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(SharedAddress(bar)), "r"(parity)
        : "memory");
  } while (!done);
#else
  __trap();
#endif
}

// Copies `bytes` (a multiple of 16) from global `src` to shared `dst` (both 16-byte aligned);
// completion is counted on `bar`.
__device__ __forceinline__ void BulkCopy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          SharedAddress(dst)),
      "l"(src), "r"(bytes), "r"(SharedAddress(bar))
      : "memory");
#else
  __trap();
#endif
}

}  // namespace bitloom::kernels::cuda::detail
