#include "bitloom/kernels/hadamard.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

// The dense matrix of R, column by column: R·e_j.
std::vector<double> DenseRotation(const HadamardRotation& r) {
  const int64_t n = r.size();
  std::vector<double> cols(n * n, 0.0);  // row j = R·e_j
  for (int64_t j = 0; j < n; ++j) cols[j * n + j] = 1.0;
  r.Apply(cols.data(), n, nullptr);
  return cols;
}

TEST(PaleyHadamard, EveryOrderUsedIsHadamard) {
  for (int64_t order : {4, 8, 12, 20, 28, 36, 44, 60, 68, 72, 84, 108}) {
    std::string name;
    const auto h = PaleyHadamard(order, &name);
    ASSERT_EQ(static_cast<int64_t>(h.size()), order * order) << order;
    for (int64_t i = 0; i < order; ++i) {
      for (int64_t j = 0; j < order; ++j) {
        int64_t dot = 0;
        for (int64_t k = 0; k < order; ++k) dot += h[i * order + k] * h[j * order + k];
        ASSERT_EQ(dot, i == j ? order : 0) << name << " rows " << i << "," << j;
      }
    }
  }
  EXPECT_TRUE(PaleyHadamard(6, nullptr).empty());
  EXPECT_TRUE(PaleyHadamard(92, nullptr).empty());  // 91 = 7·13, 45 not prime: no Paley matrix
}

TEST(HadamardRotation, ConstructionsForRealWidths) {
  EXPECT_EQ(HadamardRotation::Create(4096, 1)->Describe(), "rht:sylvester(4096)");
  EXPECT_EQ(HadamardRotation::Create(576, 1)->Describe(), "rht:paley2(36)x16");
  EXPECT_EQ(HadamardRotation::Create(1536, 1)->Describe(), "rht:paley1(12)x128");
  EXPECT_EQ(HadamardRotation::Create(14336, 1)->Describe(), "rht:paley2(28)x512");
  EXPECT_EQ(HadamardRotation::Create(2560, 1)->Describe(), "rht:paley1(20)x128");
  EXPECT_EQ(HadamardRotation::Create(960, 1)->Describe(), "rht:paley1(60)x16");
  EXPECT_EQ(HadamardRotation::Create(640, 1)->Describe(), "rht:paley1(20)x32");
  EXPECT_EQ(HadamardRotation::Create(7, 1)->Describe(), "rht:identity(7)x1");
  EXPECT_FALSE(HadamardRotation::Create(0, 1).ok());
}

class HadamardSizes : public ::testing::TestWithParam<int64_t> {};

TEST_P(HadamardSizes, IsOrthogonal) {
  const int64_t n = GetParam();
  const auto r = *HadamardRotation::Create(n, 12345);
  const auto cols = DenseRotation(r);
  double max_err = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) {
      double dot = 0.0;
      for (int64_t k = 0; k < n; ++k) dot += cols[i * n + k] * cols[j * n + k];
      max_err = std::max(max_err, std::abs(dot - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(max_err, 1e-12) << r.Describe();
  if (r.base_is_hadamard()) {
    // A true Hadamard rotation spreads every basis vector evenly: all entries ±1/√n.
    for (double v : cols)
      ASSERT_NEAR(std::abs(v), 1.0 / std::sqrt(double(n)), 1e-12) << r.Describe();
  }
}

TEST_P(HadamardSizes, TransposeInvertsAndMatchesDense) {
  const int64_t n = GetParam();
  const auto r = *HadamardRotation::Create(n, 77);
  const int64_t rows = 3;
  const auto x = testing::RandomVector(rows * n, 5);
  std::vector<float> y = x;
  ThreadPool pool(2);
  r.Apply(y.data(), rows, &pool);
  // Rᵀ·e_j is row j of R: check Rᵀ against the dense R.
  const auto cols = DenseRotation(r);  // cols[j*n + i] = R[i][j]
  std::vector<double> back(y.begin(), y.end());
  r.ApplyTranspose(back.data(), rows, nullptr);
  for (int64_t i = 0; i < rows * n; ++i) ASSERT_NEAR(back[i], x[i], 1e-5) << i;
  std::vector<double> e(n, 0.0);
  for (int64_t i = 0; i < std::min<int64_t>(n, 5); ++i) {
    std::fill(e.begin(), e.end(), 0.0);
    e[i] = 1.0;
    r.ApplyTranspose(e.data(), 1, nullptr);
    for (int64_t j = 0; j < n; ++j) ASSERT_NEAR(e[j], cols[j * n + i], 1e-12);
  }
  // Norm preserved.
  double nx = 0, ny = 0;
  for (int64_t i = 0; i < n; ++i) {
    nx += double(x[i]) * x[i];
    ny += double(y[i]) * y[i];
  }
  EXPECT_NEAR(ny, nx, 1e-4 * nx);
}

INSTANTIATE_TEST_SUITE_P(PowersAndComposites, HadamardSizes,
                         ::testing::Values(1, 2, 3, 8, 12, 24, 40, 56, 64, 96, 100, 576, 640));

TEST(HadamardRotation, SeedsAreDeterministicAndDistinct) {
  const auto a = *HadamardRotation::Create(256, 5);
  const auto b = *HadamardRotation::Create(256, 5);
  const auto c = *HadamardRotation::Create(256, 6);
  EXPECT_EQ(a.signs(), b.signs());
  EXPECT_NE(a.signs(), c.signs());
  int neg = 0;
  for (float s : a.signs()) neg += s < 0;
  EXPECT_GT(neg, 90);
  EXPECT_LT(neg, 166);
}

TEST(HadamardRotation, SpreadsAnOutlier) {
  // The point of the rotation: one huge coordinate becomes n small ones.
  const auto r = *HadamardRotation::Create(1536, 3);
  std::vector<float> x(1536, 0.0f);
  x[17] = 100.0f;
  r.Apply(x.data(), 1, nullptr);
  for (float v : x) ASSERT_NEAR(std::abs(v), 100.0f / std::sqrt(1536.0f), 1e-3f);
}

}  // namespace
}  // namespace bitloom::kernels
