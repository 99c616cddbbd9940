#include "bitloom/kernels/matmul_f32.h"

#include <algorithm>

#include "dot.h"
#include "parallel.h"

namespace bitloom::kernels {
namespace {

// Work unit: a block of 4 weight rows against every row of x. The 4 rows (4·k floats, 9 KiB for
// k = 576) stay in L1 while x streams past, so prefill reads each weight once per block rather than
// once per token; decode (m = 1) is a GEMV bound by reading w once.
constexpr int64_t kRowsPerBlock = 4;

}  // namespace

absl::Status MatmulF32(const MatmulF32Params& p, ThreadPool* pool) {
  if (p.m < 0 || p.n < 0 || p.k < 0) {
    return absl::InvalidArgumentError("MatmulF32: m, n and k must be non-negative");
  }
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (p.x == nullptr || p.w == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("MatmulF32: x, w and y must be non-null");
  }
  const int64_t blocks = (p.n + kRowsPerBlock - 1) / kRowsPerBlock;
  internal::ParallelRange(pool, blocks, kRowsPerBlock * p.k * p.m, [&p](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j0 = b * kRowsPerBlock;
      const int64_t rows = std::min(kRowsPerBlock, p.n - j0);
      const float* w0 = p.w + j0 * p.k;
      for (int64_t i = 0; i < p.m; ++i) {
        const float* xi = p.x + i * p.k;
        float* yi = p.y + i * p.n + j0;
        if (rows == kRowsPerBlock) {
          internal::DotF32x4(xi, w0, w0 + p.k, w0 + 2 * p.k, w0 + 3 * p.k, p.k, yi);
        } else {
          for (int64_t r = 0; r < rows; ++r) yi[r] = internal::DotF32(xi, w0 + r * p.k, p.k);
        }
        if (p.bias != nullptr) {
          for (int64_t r = 0; r < rows; ++r) yi[r] += p.bias[j0 + r];
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
