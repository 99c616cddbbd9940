// Device half of programmatic dependent launch (see bitloom/kernels/cuda/dependent_launch.h).
//
// Every kernel that the launchers enqueue through LaunchKernel (launch.h) calls both, in this order
// of its code:
//   AllowDependentLaunch()   on entry: the next kernel in the stream may be scheduled once all of
//                            this grid's blocks have passed here (or exited);
//   WaitForPredecessors()    before its first read of anything an earlier kernel of the stream
//                            writes (activations, KV cache, lengths) and before its first write.
// Loads of constant data (weights, scales, tables) may go between the two. Both are no-ops when the
// kernel was launched without the attribute, and compile to nothing below sm_90.
#pragma once

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

}  // namespace bitloom::kernels::cuda::detail
