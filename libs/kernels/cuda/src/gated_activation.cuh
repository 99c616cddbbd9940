// Device helpers of the gated MLP activation, shared by the stand-alone kernel
// (gated_activation.cu) and the rotation that consumes it on the fly (hadamard_rotation.cu), so
// both compute act(gate) · up with the same operations and round to the same fp32 bits.
#pragma once

#include "bitloom/kernels/activations.h"

namespace bitloom::kernels::cuda::detail {

// x · σ(a) as x / (1 + exp(−a)). For a → −∞ exp overflows to +inf and the result is ±0, the limit.
__device__ __forceinline__ float TimesSigmoid(float x, float a) {
  return __fdiv_rn(x, __fadd_rn(1.0f, expf(-a)));
}

template <Activation kAct>
__device__ __forceinline__ float Act(float x) {
  if constexpr (kAct == Activation::kSilu) {
    return TimesSigmoid(x, x);
  } else {
    // 0.5·x·(1 + tanh(u)) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³).
    constexpr float kTwoSqrtTwoOverPi = 1.5957691216057308f;  // 2·√(2/π)
    const float x3 = x * x * x;
    return TimesSigmoid(x, kTwoSqrtTwoOverPi * (x + 0.044715f * x3));
  }
}

template <Activation kAct>
__device__ __forceinline__ float Gated(float gate, float up) {
  return __fmul_rn(Act<kAct>(gate), up);
}

// The same with the activation chosen at run time (a uniform branch).
__device__ __forceinline__ float Gated(Activation act, float gate, float up) {
  return act == Activation::kSilu ? Gated<Activation::kSilu>(gate, up)
                                  : Gated<Activation::kGeluTanh>(gate, up);
}

}  // namespace bitloom::kernels::cuda::detail
