#include "bitloom/quant/hessian.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace bitloom::quant {
namespace {

std::vector<double> NaiveMean(const std::vector<float>& x, int64_t rows, int64_t dim) {
  std::vector<double> h(dim * dim, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      for (int64_t j = 0; j < dim; ++j) h[i * dim + j] += double(x[r * dim + i]) * x[r * dim + j];
    }
  }
  for (double& v : h) v /= static_cast<double>(rows);
  return h;
}

TEST(HessianAccumulator, MatchesNaiveAndIsThreadCountIndependent) {
  const int64_t rows = 150, dim = 70;
  const auto x = testing::CorrelatedInputs(rows, dim, 1);
  HessianAccumulator serial(dim), threaded(dim);
  ASSERT_TRUE(serial.Add(x, rows, nullptr).ok());
  ThreadPool pool(3);
  ASSERT_TRUE(threaded.Add(x, rows, &pool).ok());
  EXPECT_EQ(serial.sum(), threaded.sum());  // bit-identical
  EXPECT_EQ(serial.rows(), rows);
  const auto want = NaiveMean(x, rows, dim);
  const auto got = serial.Mean();
  for (int64_t i = 0; i < dim * dim; ++i)
    // fp32 Gram products per 256-token chunk, fp64 across chunks (hessian.h).
    ASSERT_NEAR(got[i], want[i], 1e-6 * (1 + std::abs(want[i]))) << i;
}

TEST(HessianAccumulator, MergeAndRestore) {
  const int64_t dim = 33;
  const auto x = testing::CorrelatedInputs(100, dim, 2);
  HessianAccumulator a(dim), b(dim), all(dim);
  ASSERT_TRUE(a.Add(absl::Span<const float>(x.data(), 40 * dim), 40, nullptr).ok());
  ASSERT_TRUE(b.Add(absl::Span<const float>(x.data() + 40 * dim, 60 * dim), 60, nullptr).ok());
  ASSERT_TRUE(all.Add(x, 100, nullptr).ok());
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.rows(), 100);
  const auto ma = a.Mean(), mall = all.Mean();
  for (size_t i = 0; i < ma.size(); ++i)
    ASSERT_NEAR(ma[i], mall[i], 1e-6 * (1 + std::abs(mall[i])));
  auto restored = HessianAccumulator::Restore(dim, a.rows(), a.sum());
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(restored->Mean(), a.Mean());
  EXPECT_FALSE(HessianAccumulator::Restore(dim, 1, std::vector<double>(5)).ok());
  EXPECT_FALSE(a.Add(absl::Span<const float>(x.data(), 10), 1, nullptr).ok());
  HessianAccumulator other(dim + 1);
  EXPECT_FALSE(a.Merge(other).ok());
}

// ‖(H + λ·mean(diag)·I)·Uᵀ·U − I‖_max.
double InverseError(const std::vector<double>& h, const HessianFactor& f) {
  const int64_t n = f.dim;
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag /= n;
  std::vector<double> hinv(n * n, 0.0);  // Uᵀ·U
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k <= std::min(i, j); ++k) s += f.u[k * n + i] * f.u[k * n + j];
      hinv[i * n + j] = s;
    }
  }
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) {
        const double hd = h[i * n + k] + (i == k ? f.relative_damp * mean_diag : 0.0);
        s += hd * hinv[k * n + j];
      }
      err = std::max(err, std::abs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  return err;
}

TEST(FactorHessian, UpperFactorOfDampedInverse) {
  const int64_t dim = 90;
  const auto x = testing::CorrelatedInputs(400, dim, 3);
  HessianAccumulator acc(dim);
  ASSERT_TRUE(acc.Add(x, 400, nullptr).ok());
  const auto h = acc.Mean();
  ThreadPool pool(2);
  auto f = FactorHessian(h, dim, {}, &pool);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->attempts, 1);
  EXPECT_FALSE(f->diagonal_fallback);
  EXPECT_DOUBLE_EQ(f->relative_damp, 0.01);
  for (int64_t i = 0; i < dim; ++i) {
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(f->u[i * dim + j], 0.0);
  }
  EXPECT_LT(InverseError(h, *f), 1e-9);
  auto f1 = FactorHessian(h, dim, {}, nullptr);
  EXPECT_EQ(f1->u, f->u);  // thread-count independent
}

TEST(FactorHessian, RankDeficientAndDeadInputsStillFactor) {
  // 10 rows for 64 dims: rank 10; plus two inputs that are always zero.
  const int64_t dim = 64;
  auto x = testing::CorrelatedInputs(10, dim, 4);
  for (int64_t r = 0; r < 10; ++r) x[r * dim + 5] = x[r * dim + 6] = 0.0f;
  HessianAccumulator acc(dim);
  ASSERT_TRUE(acc.Add(x, 10, nullptr).ok());
  auto f = FactorHessian(acc.Mean(), dim, {}, nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  for (double v : f->u) ASSERT_TRUE(std::isfinite(v));
}

TEST(FactorHessian, IndefiniteRetriesThenFallsBack) {
  const int64_t dim = 8;
  // Indefinite: a big negative eigenvalue that damping at 1%·10^k must overcome.
  std::vector<double> h(dim * dim, 0.0);
  for (int64_t i = 0; i < dim; ++i) h[i * dim + i] = 1.0;
  h[0 * dim + 1] = h[1 * dim + 0] = 1.5;  // eigenvalues 2.5 and −0.5 in that 2×2 block
  auto f = FactorHessian(h, dim, {}, nullptr);
  ASSERT_TRUE(f.ok());
  EXPECT_GT(f->attempts, 1);
  EXPECT_FALSE(f->diagonal_fallback);
  EXPECT_LT(InverseError(h, *f), 1e-9);

  h[0 * dim + 1] = h[1 * dim + 0] = 1e9;  // hopeless: only the diagonal fallback works
  auto g = FactorHessian(h, dim, {}, nullptr);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->diagonal_fallback);
  for (double v : g->u) ASSERT_TRUE(std::isfinite(v));

  h[3] = NAN;
  EXPECT_FALSE(FactorHessian(h, dim, {}, nullptr).ok());
  EXPECT_FALSE(FactorHessian(h, dim + 1, {}, nullptr).ok());
}

TEST(RotateHessian, EqualsHessianOfRotatedInputs) {
  const int64_t rows = 200, dim = 48;  // 48 = 12·4: a Paley base
  const auto x = testing::CorrelatedInputs(rows, dim, 5);
  const auto rot = *kernels::HadamardRotation::Create(dim, 9);
  HessianAccumulator plain(dim), rotated(dim);
  ASSERT_TRUE(plain.Add(x, rows, nullptr).ok());
  std::vector<float> xr = x;
  rot.Apply(xr.data(), rows, nullptr);
  ASSERT_TRUE(rotated.Add(xr, rows, nullptr).ok());
  auto h = plain.Mean();
  ASSERT_TRUE(RotateHessian(rot, &h, nullptr).ok());
  const auto want = rotated.Mean();
  for (int64_t i = 0; i < dim * dim; ++i)
    ASSERT_NEAR(h[i], want[i], 1e-4 * (1 + std::abs(want[i]))) << i;
  std::vector<double> wrong(dim);
  EXPECT_FALSE(RotateHessian(rot, &wrong, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::quant
