#include "bitloom/quant/scalar_quantizer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/kernels/matmul_f32.h"

namespace bitloom::quant {
namespace {

using kernels::ScalarCodecLayout;

// Columns per LDLQ block: the lazy update is a rank-kBlock product, big enough to amortise reading
// U.
constexpr int64_t kLdlqBlock = 128;
// Rows processed together by one thread: their W rows (kTileRows × cols floats) stay in cache while
// U's rows stream past once per block.
constexpr int64_t kTileRows = 16;
// Column chunk of the lazy update, so kTileRows × kChunk of W and kLdlqBlock × kChunk of U fit in
// L2.
constexpr int64_t kLazyChunk = 512;

void ParallelRows(ThreadPool* pool, int64_t n, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() == 0 || n <= 1 || n * cost_per_row < (1 << 16)) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(0, static_cast<size_t>(n), [&](size_t lo, size_t hi) {
    fn(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  });
}

// One K-bit symmetric grid with a given fp16 scale: the exact arithmetic of the decoder.
struct Grid {
  float scale = 0.0f;
  float inv = 0.0f;
  float center = 0.0f;
  float qmax = 0.0f;

  Grid(uint16_t scale_f16, int bits)
      : scale(F16ToF32(scale_f16)),
        inv(scale > 0.0f ? 1.0f / scale : 0.0f),
        center(kernels::ScalarGridCenter(bits)),
        qmax(static_cast<float>((1 << bits) - 1)) {}

  uint8_t Code(float v) const {
    // clamp(floor(x + ½), 0, qmax), independent of the FP rounding mode: clamping first to
    // [0, qmax + ½] makes truncation equal floor, and truncation vectorises (floor does not on
    // baseline x86-64). With scale 0 every code decodes to 0, so any code is right.
    const float x = std::clamp(v * inv + center + 0.5f, 0.0f, qmax + 0.5f);
    return static_cast<uint8_t>(static_cast<int>(x));
  }
  float Value(uint8_t q) const { return scale * (static_cast<float>(q) - center); }
};

// Σ (v − decode(code(v)))² over a group, in 8 fp32 lanes (vectorisable, fixed order) summed in
// fp64.
double GroupError(const float* v, int64_t n, const Grid& g) {
  constexpr int kLanes = 8;
  float lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float d = v[i + l] - g.Value(g.Code(v[i + l]));
      lane[l] += d * d;
    }
  }
  double err = 0.0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(v[i]) - g.Value(g.Code(v[i]));
    err += d * d;
  }
  for (float x : lane) err += x;
  return err;
}

// The fp16 scale minimising the group's squared rounding error: a grid over clipping ratios, then
// least-squares refinement s = Σv·l / Σl² for the chosen levels l (it converges to the
// Lloyd-optimal scale for those levels; at K = 1 it gives the optimal ±mean|v| directly).
uint16_t ChooseScale(const float* v, int64_t n, int bits, const ScalarQuantizerOptions& o) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(v[i]));
  if (!(amax > 0.0f) || !std::isfinite(amax)) return F32ToF16(0.0f);
  const float center = kernels::ScalarGridCenter(bits);
  uint16_t best = F32ToF16(amax / center);
  double best_err = GroupError(v, n, Grid(best, bits));
  const int steps = std::max(1, o.clip_steps);
  for (int k = 1; k < steps; ++k) {
    const double alpha = 1.0 - (1.0 - o.min_clip) * k / (steps - 1);
    const uint16_t s = F32ToF16(static_cast<float>(alpha * amax / center));
    const double err = GroupError(v, n, Grid(s, bits));
    if (err < best_err) {
      best_err = err;
      best = s;
    }
  }
  for (int iter = 0; iter < 2; ++iter) {
    const Grid g(best, bits);
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double l = static_cast<double>(g.Code(v[i])) - center;
      num += v[i] * l;
      den += l * l;
    }
    if (!(den > 0.0) || !(num > 0.0)) break;
    const uint16_t s = F32ToF16(static_cast<float>(num / den));
    const double err = GroupError(v, n, Grid(s, bits));
    if (!(err < best_err)) break;
    best_err = err;
    best = s;
  }
  return best;
}

absl::Status CheckShapes(absl::Span<const float> w, int64_t rows, int64_t cols,
                         absl::Span<const double> h, bool need_h, const char* op) {
  if (rows <= 0 || cols <= 0 || static_cast<int64_t>(w.size()) != rows * cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", w.size(), " weights for shape [", rows, ", ", cols, "]"));
  }
  if ((need_h || !h.empty()) && static_cast<int64_t>(h.size()) != cols * cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": Hessian has ", h.size(), " values, needs ", cols * cols));
  }
  for (float v : w) {
    if (!std::isfinite(v))
      return absl::InvalidArgumentError(absl::StrCat(op, ": the weight has a non-finite value"));
  }
  return absl::OkStatus();
}

// Dequantizes the codes/scales the encoder produced, for the proxy loss (same arithmetic as the
// kernel).
std::vector<float> Dequantize(const ScalarCodecLayout& l, const std::vector<uint8_t>& codes,
                              const std::vector<uint16_t>& scales) {
  std::vector<float> q(l.rows * l.cols);
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      const Grid g(scales[r * l.groups_per_row + c / l.group_size], l.bits);
      q[r * l.cols + c] = g.Value(codes[r * l.cols + c]);
    }
  }
  return q;
}

// What LDLQ knows about its own error: with D = W − Q and E the scaled errors it pushed forward,
// D = E·U, and U·(H + diag(c))·Uᵀ = I for the factored matrix, so
//   tr(D·H·Dᵀ) = ‖E‖² − Σ_j c_j·‖D[:, j]‖²,
// an O(rows·cols) proxy loss instead of a rows·cols² product.
struct LdlqErrors {
  const std::vector<double>* added_diagonal = nullptr;  // c
  double scaled_error_energy = 0.0;                     // ‖E‖²
};

// The largest damping for which the identity above is used: beyond it ‖E‖² and the correction
// are close and their difference would lose digits, so the loss is computed directly.
constexpr double kMaxDampForIdentity = 0.1;

absl::StatusOr<QuantizedWeight> Finish(const ScalarCodecLayout& layout, absl::Span<const float> w,
                                       absl::Span<const double> h,
                                       const std::vector<uint8_t>& codes,
                                       const std::vector<uint16_t>& scales, double w_energy,
                                       const LdlqErrors* ldlq, ThreadPool* pool) {
  QuantizedWeight out;
  out.layout = layout;
  auto blob = kernels::PackScalarCodec(layout, codes, scales);
  if (!blob.ok()) return blob.status();
  out.blob = std::move(*blob);
  if (h.empty()) return out;
  const std::vector<float> q = Dequantize(layout, codes, scales);
  if (ldlq == nullptr) {
    out.proxy_loss = ProxyLoss(w, q, layout.rows, layout.cols, h, pool, w_energy);
    return out;
  }
  const int64_t cols = layout.cols;
  std::vector<double> column_energy(cols, 0.0);
  for (int64_t r = 0; r < layout.rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double d = static_cast<double>(w[r * cols + c]) - q[r * cols + c];
      column_energy[c] += d * d;
    }
  }
  double num = ldlq->scaled_error_energy;
  for (int64_t c = 0; c < cols; ++c) num -= (*ldlq->added_diagonal)[c] * column_energy[c];
  const double den = w_energy >= 0.0 ? w_energy : OutputEnergy(w, layout.rows, cols, h, pool);
  num = std::max(0.0, num);
  out.proxy_loss = den > 0.0 ? num / den : (num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0);
  return out;
}

}  // namespace

double OutputEnergy(absl::Span<const float> w, int64_t rows, int64_t cols,
                    absl::Span<const double> h, ThreadPool* pool) {
  // Y = W·H with the blocked fp32 matmul (H is symmetric, so its rows are its columns), then
  // Σ W∘Y in fp64. The matmul's order is fixed whatever the pool, so the result is deterministic;
  // fp32 products over `cols` terms keep ~1e-6 relative precision, ample for a loss estimate.
  const std::vector<float> h32(h.begin(), h.end());
  std::vector<float> y(rows * cols);
  kernels::MatmulF32Params mp;
  mp.x = w.data();
  mp.w = h32.data();
  mp.y = y.data();
  mp.m = rows;
  mp.n = cols;
  mp.k = cols;
  if (!kernels::MatmulF32(mp, pool).ok()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> per_row(rows, 0.0);
  ParallelRows(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* wr = w.data() + r * cols;
      const float* yr = y.data() + r * cols;
      double s = 0.0;
      for (int64_t i = 0; i < cols; ++i) s += static_cast<double>(wr[i]) * yr[i];
      per_row[r] = s;
    }
  });
  double total = 0.0;
  for (double v : per_row) total += v;  // fixed order: deterministic across thread counts
  return total;
}

double ProxyLoss(absl::Span<const float> w, absl::Span<const float> q, int64_t rows, int64_t cols,
                 absl::Span<const double> h, ThreadPool* pool, double w_energy) {
  std::vector<float> d(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) d[i] = w[i] - q[i];
  const double num = OutputEnergy(d, rows, cols, h, pool);
  const double den = w_energy >= 0.0 ? w_energy : OutputEnergy(w, rows, cols, h, pool);
  if (den > 0.0) return num / den;
  return num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
}

absl::StatusOr<QuantizedWeight> QuantizeRtn(absl::Span<const float> w, int64_t rows, int64_t cols,
                                            absl::Span<const double> h,
                                            const ScalarQuantizerOptions& o, ThreadPool* pool) {
  if (absl::Status s = CheckShapes(w, rows, cols, h, false, "QuantizeRtn"); !s.ok()) return s;
  auto layout = kernels::MakeScalarCodecLayout(rows, cols, o.bits, o.group_size);
  if (!layout.ok()) return layout.status();
  const ScalarCodecLayout& l = *layout;
  std::vector<uint8_t> codes(rows * cols);
  std::vector<uint16_t> scales(rows * l.groups_per_row);
  ParallelRows(pool, rows, cols * (o.clip_steps + 4), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < l.groups_per_row; ++g) {
        const int64_t c0 = g * l.group_size;
        const int64_t n = std::min<int64_t>(l.group_size, cols - c0);
        const float* v = w.data() + r * cols + c0;
        const uint16_t s = ChooseScale(v, n, o.bits, o);
        scales[r * l.groups_per_row + g] = s;
        const Grid grid(s, o.bits);
        for (int64_t i = 0; i < n; ++i) codes[r * cols + c0 + i] = grid.Code(v[i]);
      }
    }
  });
  return Finish(l, w, h, codes, scales, o.output_energy, nullptr, pool);
}

absl::StatusOr<QuantizedWeight> QuantizeLdlq(absl::Span<const float> w, int64_t rows, int64_t cols,
                                             absl::Span<const double> h,
                                             const HessianFactor& factor,
                                             const ScalarQuantizerOptions& o, ThreadPool* pool) {
  if (absl::Status s = CheckShapes(w, rows, cols, h, true, "QuantizeLdlq"); !s.ok()) return s;
  if (factor.dim != cols || static_cast<int64_t>(factor.u.size()) != cols * cols) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizeLdlq: Hessian factor of dim ",
                                                   factor.dim, " for ", cols, " columns"));
  }
  auto layout = kernels::MakeScalarCodecLayout(rows, cols, o.bits, o.group_size);
  if (!layout.ok()) return layout.status();
  const ScalarCodecLayout& l = *layout;
  const int64_t gs = l.group_size;
  // A group must lie inside one block so its scale sees fully updated weights: block = multiple of
  // gs.
  const int64_t block = std::max<int64_t>(1, kLdlqBlock / gs) * gs;
  // U in fp32: the updates below are fp32 anyway, and converting once halves the bytes streamed.
  const std::vector<float> u32(factor.u.begin(), factor.u.end());
  const float* u = u32.data();

  std::vector<uint8_t> codes(rows * cols);
  std::vector<uint16_t> scales(rows * l.groups_per_row);
  std::vector<double> row_error_energy(rows, 0.0);  // Σ e² per row, for the proxy loss
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  ParallelRows(pool, tiles, kTileRows * cols * cols / 2, [&](int64_t t0, int64_t t1) {
    std::vector<float> wt(kTileRows * cols);
    std::vector<float> err(kTileRows * block);
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t r0 = tile * kTileRows;
      const int64_t nr = std::min(kTileRows, rows - r0);
      std::copy(w.begin() + r0 * cols, w.begin() + (r0 + nr) * cols, wt.begin());
      for (int64_t b0 = 0; b0 < cols; b0 += block) {
        const int64_t b1 = std::min(cols, b0 + block);
        for (int64_t t = 0; t < nr; ++t) {
          float* wr = wt.data() + t * cols;
          float* er = err.data() + t * block;
          uint16_t scale = 0;
          for (int64_t i = b0; i < b1; ++i) {
            if (i % gs == 0) {
              scale = ChooseScale(wr + i, std::min(gs, cols - i), o.bits, o);
              scales[(r0 + t) * l.groups_per_row + i / gs] = scale;
            }
            const Grid grid(scale, o.bits);
            const uint8_t q = grid.Code(wr[i]);
            codes[(r0 + t) * cols + i] = q;
            const float e = (wr[i] - grid.Value(q)) / u[i * cols + i];
            er[i - b0] = e;
            row_error_energy[r0 + t] += static_cast<double>(e) * e;
            const float* ui = u + i * cols;
            for (int64_t j = i + 1; j < b1; ++j) wr[j] -= e * ui[j];
          }
        }
        // Lazy update of everything right of the block: W[:, b1:] -= E · U[b0:b1, b1:].
        for (int64_t c0 = b1; c0 < cols; c0 += kLazyChunk) {
          const int64_t c1 = std::min(cols, c0 + kLazyChunk);
          for (int64_t i = b0; i < b1; ++i) {
            const float* ui = u + i * cols;
            for (int64_t t = 0; t < nr; ++t) {
              const float e = err[t * block + (i - b0)];
              float* wr = wt.data() + t * cols;
              for (int64_t j = c0; j < c1; ++j) wr[j] -= e * ui[j];
            }
          }
        }
      }
    }
  });
    double scaled_error_energy = 0.0;
  for (double v : row_error_energy) scaled_error_energy += v;  // fixed order
  const bool identity = static_cast<int64_t>(factor.added_diagonal.size()) == cols &&
                        factor.relative_damp <= kMaxDampForIdentity;
  const LdlqErrors errors{&factor.added_diagonal, scaled_error_energy};
  return Finish(l, w, h, codes, scales, o.output_energy, identity ? &errors : nullptr, pool);
}

}  // namespace bitloom::quant
