#include "bitloom/kernels/rms_norm.h"

#include <cmath>

#include "parallel.h"

namespace bitloom::kernels {

absl::Status RmsNormF32(const RmsNormParams& p, ThreadPool* pool) {
  if (p.rows < 0 || p.dim <= 0) {
    return absl::InvalidArgumentError("RmsNormF32: rows must be >= 0 and dim > 0");
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.weight == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("RmsNormF32: x, weight and y must be non-null");
  }
  internal::ParallelRange(pool, p.rows, p.dim * 2, [&p](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = p.x + r * p.dim;
      float* y = p.y + r * p.dim;
      double sum_sq = 0.0;
      for (int64_t i = 0; i < p.dim; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
      const float inv_rms =
          static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(p.dim) + p.eps));
      // (x · inv_rms) · w, in this order, as Hugging Face computes it in fp32.
      for (int64_t i = 0; i < p.dim; ++i) y[i] = (x[i] * inv_rms) * (p.weight[i] + p.weight_offset);
    }
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
