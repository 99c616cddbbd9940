// Gated MLP activations and logit soft-capping.
//
// GatedActivationF32 computes out = act(gate) · up, the middle of a SwiGLU (act = SiLU: Llama, Mistral,
// Qwen) or GeGLU (act = GELU with the tanh approximation: Gemma) block. Each element is evaluated in
// double and rounded once, which is at least as accurate as PyTorch's fp32 kernels.
// SoftcapF32 is Gemma's x ← cap · tanh(x / cap), used on attention scores and final logits.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

enum class Activation { kSilu, kGeluTanh };

float SiluF32(float x);      // x · sigmoid(x)
float GeluTanhF32(float x);  // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))

struct GatedActivationParams {
  const float* gate = nullptr;  // [rows, dim]
  const float* up = nullptr;    // [rows, dim]
  float* out = nullptr;         // [rows, dim]; may equal gate or up
  int64_t rows = 0;
  int64_t dim = 0;
  Activation activation = Activation::kSilu;
};

absl::Status GatedActivationF32(const GatedActivationParams& params, ThreadPool* pool);

// x[i] = cap · tanh(x[i] / cap) for i in [0, n); cap > 0.
void SoftcapF32(float* x, int64_t n, float cap);

}  // namespace bitloom::kernels
