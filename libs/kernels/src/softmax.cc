#include "bitloom/kernels/softmax.h"

#include <algorithm>
#include <cmath>

#include "parallel.h"

namespace bitloom::kernels {

double LogSumExpF32(const float* x, int64_t n) {
  float max_v = x[0];
  for (int64_t i = 1; i < n; ++i) max_v = std::max(max_v, x[i]);
  if (std::isinf(max_v)) return max_v;  // all -inf, or a +inf that dominates
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - max_v);
  return max_v + std::log(sum);
}

absl::Status SoftmaxF32(const SoftmaxParams& p, ThreadPool* pool) {
  if (p.rows < 0 || p.cols <= 0) return absl::InvalidArgumentError("SoftmaxF32: needs rows >= 0, cols > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return absl::InvalidArgumentError("SoftmaxF32: x and y must be non-null");
  internal::ParallelRange(pool, p.rows, p.cols * 8, [&p](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = p.x + r * p.cols;
      float* y = p.y + r * p.cols;
      // Subtract the max before anything else: forming max + log(sum) first would lose the small
      // log(sum) term against a huge max (1e30 + log 2 == 1e30).
      float max_v = x[0];
      for (int64_t i = 1; i < p.cols; ++i) max_v = std::max(max_v, x[i]);
      double sum = 0.0;
      for (int64_t i = 0; i < p.cols; ++i) sum += std::exp(static_cast<double>(x[i]) - max_v);
      const double log_sum = std::log(sum);
      for (int64_t i = 0; i < p.cols; ++i) {
        const double shifted = static_cast<double>(x[i]) - max_v;
        y[i] = static_cast<float>(p.log ? shifted - log_sum : std::exp(shifted) / sum);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
