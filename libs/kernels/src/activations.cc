#include "bitloom/kernels/activations.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "parallel.h"

namespace bitloom::kernels {

float SiluF32(float x) {
  const double v = x;
  return static_cast<float>(v / (1.0 + std::exp(-v)));
}

float GeluTanhF32(float x) {
  const double v = x;
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return static_cast<float>(0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))));
}

absl::Status GatedActivationF32(const GatedActivationParams& p, ThreadPool* pool) {
  if (p.rows < 0 || p.dim < 0) return absl::InvalidArgumentError("GatedActivationF32: negative shape");
  if (p.rows == 0 || p.dim == 0) return absl::OkStatus();
  if (p.gate == nullptr || p.up == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError("GatedActivationF32: gate, up and out must be non-null");
  }
  const int64_t total = p.rows * p.dim;
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  internal::ParallelRange(pool, chunks, kChunk * 16, [&p, total](int64_t c0, int64_t c1) {
    const int64_t end = std::min(total, c1 * kChunk);
    if (p.activation == Activation::kSilu) {
      for (int64_t i = c0 * kChunk; i < end; ++i) p.out[i] = SiluF32(p.gate[i]) * p.up[i];
    } else {
      for (int64_t i = c0 * kChunk; i < end; ++i) p.out[i] = GeluTanhF32(p.gate[i]) * p.up[i];
    }
  });
  return absl::OkStatus();
}

void SoftcapF32(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(cap * std::tanh(static_cast<double>(x[i]) / cap));
  }
}

}  // namespace bitloom::kernels
