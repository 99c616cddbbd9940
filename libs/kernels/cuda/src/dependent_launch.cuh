// Device half of programmatic dependent launch (see bitloom/kernels/cuda/dependent_launch.h).
//
// Every kernel that the launchers enqueue through LaunchKernel (launch.h) calls both, in this order
// of its code:
//   AllowDependentLaunch()   on entry: the next kernel in the stream may be scheduled once all of
//                            this grid's blocks have passed here (or exited);
//   WaitForPredecessors()    before its first read of anything an earlier kernel of the stream
//                            writes (activations, KV cache, lengths) and before its first write.
// Loads of constant data (weights, scales, tables) may go between the two; to make sure they are
// issued before the wait (ptxas may otherwise move the wait above them), end with
// WaitForPredecessorsAfter(a word one of them loaded) instead. Both are no-ops when the
// kernel was launched without the attribute, and compile to nothing below sm_90.
#pragma once

#include <cstdint>

namespace bitloom::kernels::cuda::detail {

__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void WaitForPredecessors() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// WaitForPredecessors, made to depend on `loaded`, a register that a load issued before it fills:
// ptxas otherwise hoists the wait above such loads (they read constant data, so it may), and the
// loads meant to overlap the kernel ahead only go out once it has finished. The wait is predicated
// on a comparison with `loaded` (taken one way or the other, so it always happens exactly once).
__device__ __forceinline__ void WaitForPredecessorsAfter(uint32_t loaded) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred p;\n setp.eq.u32 p, %0, 0x9e3779b9;\n @p griddepcontrol.wait;\n"
      " @!p griddepcontrol.wait;\n}" ::"r"(loaded)
      : "memory");
#endif
}

}  // namespace bitloom::kernels::cuda::detail
