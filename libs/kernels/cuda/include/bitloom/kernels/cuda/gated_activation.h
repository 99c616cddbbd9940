// The middle of a gated MLP on the GPU: out = act(gate) · up, element by element, with act SiLU
// (SwiGLU: Llama, Mistral, Qwen, SmolLM2) or GELU with the tanh approximation (GeGLU: Gemma).
// gate and up are fp32 GEMV outputs (separate, or the two halves of one fused gate_up output: each
// has its own row stride); out is fp32, fp16 (the input of the down projection's rotation) or both.
//
// Precision: fp32 math. Both activations are evaluated as x · σ(a) = x / (1 + exp(−a)) (SiLU: a = x;
// GELU-tanh: a = 2·√(2/π)·(x + 0.044715·x³), since ½(1 + tanh(u)) = σ(2u)), which has no cancellation
// where tanh → −1. Against GatedActivationF32 (double, rounded once) the relative error is a few
// fp32 ulps; the test's bound is stated there.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`, allocates
// nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/kernels/activations.h"

namespace bitloom::kernels::cuda {

struct GatedActivationParams {
  const float* gate = nullptr;  // device [rows, gate_stride] fp32, columns [0, dim) read
  int64_t gate_stride = 0;      // elements, >= dim
  const float* up = nullptr;    // device [rows, up_stride] fp32
  int64_t up_stride = 0;        // elements, >= dim
  float* out_f32 = nullptr;     // device [rows, dim] fp32, or null; may equal gate if strides match
  uint16_t* out_f16 = nullptr;  // device [rows, dim] fp16 (IEEE bits), or null
  int64_t rows = 0;             // tokens; 0 is a no-op
  int64_t dim = 0;              // intermediate size, >= 1
  Activation activation = Activation::kSilu;
};

// INVALID_ARGUMENT for a bad shape or stride, null inputs or no output; INTERNAL for a CUDA launch
// error.
absl::Status LaunchGatedActivation(const GatedActivationParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
