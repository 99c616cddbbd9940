#include "bitloom/quant/hessian.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/matmul_f32.h"

namespace bitloom::quant {
namespace {

// Tokens per fp32 Gram product: long enough for the matmul to run at speed, short enough that
// fp32 sums over it lose nothing the fp64 accumulation across chunks would keep.
constexpr int64_t kChunkRows = 256;
// Rows of H per Gram product: the upper triangle is covered by ceil(dim / kGramBand) rectangles.
constexpr int64_t kGramBand = 256;

// Runs fn(i) for i in [0, n) on the pool, pairing i with n−1−i so triangular work balances.
void ParallelTriangle(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn) {
  const int64_t pairs = (n + 1) / 2;
  auto body = [&](size_t lo, size_t hi) {
    for (size_t p = lo; p < hi; ++p) {
      const int64_t a = static_cast<int64_t>(p);
      fn(a);
      if (n - 1 - a != a) fn(n - 1 - a);
    }
  };
  if (pool == nullptr || pool->num_threads() == 0 || n < 64) {
    body(0, static_cast<size_t>(pairs));
  } else {
    pool->ParallelFor(0, static_cast<size_t>(pairs), body);
  }
}

void ParallelRows(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() == 0 || n < 64) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(0, static_cast<size_t>(n), [&](size_t lo, size_t hi) {
    fn(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  });
}

// In-place lower Cholesky of a [n, n] row-major (lower triangle read and written). Column-oriented
// so each column's entries below the diagonal are independent dot products of contiguous row
// prefixes.
bool CholeskyLower(std::vector<double>& a, int64_t n, ThreadPool* pool) {
  for (int64_t j = 0; j < n; ++j) {
    double* aj = a.data() + j * n;
    double d = aj[j];
    for (int64_t k = 0; k < j; ++k) d -= aj[k] * aj[k];
    if (!(d > 0.0) || !std::isfinite(d)) return false;
    const double ljj = std::sqrt(d);
    aj[j] = ljj;
    const double inv = 1.0 / ljj;
    auto col = [&](int64_t lo, int64_t hi) {
      for (int64_t i = j + 1 + lo; i < j + 1 + hi; ++i) {
        double* ai = a.data() + i * n;
        double s = ai[j];
        for (int64_t k = 0; k < j; ++k) s -= ai[k] * aj[k];
        ai[j] = s * inv;
      }
    };
    const int64_t below = n - j - 1;
    if (below * j < (1 << 15)) {
      col(0, below);
    } else {
      ParallelRows(pool, below, col);
    }
  }
  return true;
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t dim)
    : dim_(std::max<int64_t>(dim, 0)), sum_(dim_ * dim_, 0.0) {}

absl::Status HessianAccumulator::Add(absl::Span<const float> x, int64_t rows, ThreadPool* pool) {
  if (rows < 0 || static_cast<int64_t>(x.size()) != rows * dim_) {
    return absl::InvalidArgumentError(absl::StrCat("HessianAccumulator::Add: ", x.size(),
                                                   " values for ", rows, " rows of dim ", dim_));
  }
  // Per chunk of kChunkRows tokens, X_cᵀ·X_c with the blocked fp32 matmul (fp32 products summed
  // over at most kChunkRows terms, in the matmul's fixed order), then added into the fp64 sum.
  std::vector<float> xt(dim_ * kChunkRows);  // chunk transposed: xt[i*t + r] = x[r][i]
  std::vector<float> gram(dim_ * dim_);
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    const int64_t t = std::min(kChunkRows, rows - r0);
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t i = 0; i < dim_; ++i) xt[i * t + r] = x[(r0 + r) * dim_ + i];
    }
    // Only the upper triangle is kept: row band [i0, i1) needs columns [i0, dim) alone, which
    // roughly halves the products for a handful of bands.
    for (int64_t i0 = 0; i0 < dim_; i0 += kGramBand) {
      const int64_t i1 = std::min(dim_, i0 + kGramBand);
      kernels::MatmulF32Params mp;
      mp.x = xt.data() + i0 * t;
      mp.w = xt.data() + i0 * t;
      mp.y = gram.data();
      mp.m = i1 - i0;
      mp.n = dim_ - i0;
      mp.k = t;
      if (absl::Status st = kernels::MatmulF32(mp, pool); !st.ok()) return st;
      ParallelRows(pool, i1 - i0, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          double* hrow = sum_.data() + (i0 + r) * dim_ + i0;
          const float* grow = gram.data() + r * (dim_ - i0);
          for (int64_t j = r; j < dim_ - i0; ++j) hrow[j] += grow[j];
        }
      });
    }
  }
  rows_ += rows;
  return absl::OkStatus();
}

absl::Status HessianAccumulator::Merge(const HessianAccumulator& other) {
  if (other.dim_ != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("HessianAccumulator::Merge: dim ", other.dim_, " != ", dim_));
  }
  for (size_t i = 0; i < sum_.size(); ++i) sum_[i] += other.sum_[i];
  rows_ += other.rows_;
  return absl::OkStatus();
}

std::vector<double> HessianAccumulator::Mean() const {
  std::vector<double> h(dim_ * dim_, 0.0);
  if (rows_ == 0) return h;
  const double inv = 1.0 / static_cast<double>(rows_);
  for (int64_t i = 0; i < dim_; ++i) {
    for (int64_t j = i; j < dim_; ++j) {
      const double v = sum_[i * dim_ + j] * inv;
      h[i * dim_ + j] = v;
      h[j * dim_ + i] = v;
    }
  }
  return h;
}

absl::StatusOr<HessianAccumulator> HessianAccumulator::Restore(int64_t dim, int64_t rows,
                                                               std::vector<double> sum) {
  if (dim < 0 || rows < 0 || static_cast<int64_t>(sum.size()) != dim * dim) {
    return absl::InvalidArgumentError(absl::StrCat("HessianAccumulator::Restore: ", sum.size(),
                                                   " values for dim ", dim, " (rows ", rows, ")"));
  }
  HessianAccumulator acc(dim);
  acc.rows_ = rows;
  acc.sum_ = std::move(sum);
  return acc;
}

absl::Status RotateHessian(const kernels::HadamardRotation& rotation, std::vector<double>* h,
                           ThreadPool* pool) {
  const int64_t n = rotation.size();
  if (static_cast<int64_t>(h->size()) != n * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("RotateHessian: ", h->size(), " values for rotation of size ", n));
  }
  // Row-wise application gives H·Rᵀ; its transpose is R·H (H symmetric); row-wise again gives
  // R·H·Rᵀ.
  rotation.Apply(h->data(), n, pool);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) std::swap((*h)[i * n + j], (*h)[j * n + i]);
  }
  rotation.Apply(h->data(), n, pool);
  // Symmetrise the rounding so the factorisation sees an exactly symmetric matrix.
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = 0.5 * ((*h)[i * n + j] + (*h)[j * n + i]);
      (*h)[i * n + j] = v;
      (*h)[j * n + i] = v;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<HessianFactor> FactorHessian(absl::Span<const double> h, int64_t n,
                                            const DampingOptions& options, ThreadPool* pool) {
  if (n <= 0 || static_cast<int64_t>(h.size()) != n * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("FactorHessian: ", h.size(), " values for dim ", n));
  }
  for (double v : h) {
    if (!std::isfinite(v))
      return absl::InvalidArgumentError("FactorHessian: the Hessian has a non-finite entry");
  }
  std::vector<double> diag(n);
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    diag[i] = h[i * n + i];
    mean_diag += diag[i];
  }
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;  // no calibration signal at all: H := I (RTN)
  for (double& d : diag) {
    if (!(d > 0.0)) d = mean_diag;
  }

  // We need U upper with (H+λI)⁻¹ = Uᵀ·U. With P the reversal permutation, Cholesky of P·H·P = L·Lᵀ
  // gives H = V·Vᵀ with V = P·L·P upper triangular, so H⁻¹ = V⁻ᵀ·V⁻¹ and U = V⁻¹ = P·L⁻¹·P: one
  // Cholesky and one triangular inverse, no explicit inverse of H.
  HessianFactor out;
  out.dim = n;
  std::vector<double> a(n * n);
  double lambda = options.relative_damp;
  bool ok = false;
  const int attempts = std::max(1, options.max_attempts);
  for (int attempt = 1; attempt <= attempts + 1 && !ok; ++attempt) {
    const bool diagonal = attempt > attempts;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t si = n - 1 - i, sj = n - 1 - j;
        double v = diagonal ? 0.0 : h[si * n + sj];
        if (i == j) v = diag[si] + lambda * mean_diag;
        a[i * n + j] = v;
      }
    }
    ok = CholeskyLower(a, n, pool);
    out.attempts = attempt;
    out.relative_damp = lambda;
    out.diagonal_fallback = diagonal;
    if (!ok) lambda *= options.growth;
  }
  if (!ok)
    return absl::InternalError("FactorHessian: diagonal fallback failed");  // unreachable: diag > 0
  if (!out.diagonal_fallback) {
    out.added_diagonal.resize(n);
    for (int64_t i = 0; i < n; ++i) out.added_diagonal[i] = diag[i] - h[i * n + i] + lambda * mean_diag;
  }

  // M = L⁻¹ (lower), stored transposed: mt[j][k] = M[k][j], so column j of M is a contiguous row.
  std::vector<double> mt(n * n, 0.0);
  ParallelTriangle(pool, n, [&](int64_t j) {
    double* mj = mt.data() + j * n;
    mj[j] = 1.0 / a[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      const double* li = a.data() + i * n;
      double s = 0.0;
      for (int64_t k = j; k < i; ++k) s += li[k] * mj[k];
      mj[i] = -s / li[i];
    }
  });
  out.u.assign(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) out.u[i * n + j] = mt[(n - 1 - j) * n + (n - 1 - i)];
  }
  return out;
}

}  // namespace bitloom::quant
