#include "bitloom/kernels/softmax.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

TEST(SoftmaxF32, MatchesDoubleReference) {
  ThreadPool pool(2);
  for (int cols : {1, 2, 31, 1001}) {
    const int rows = 5;
    const auto x = testing::RandomVector(rows * cols, 21, 10.0f);
    for (bool log : {false, true}) {
      std::vector<float> y(x.size());
      ASSERT_TRUE(SoftmaxF32({x.data(), y.data(), rows, cols, log}, &pool).ok());
      std::vector<double> want(x.size());
      for (int r = 0; r < rows; ++r) {
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < cols; ++i) mx = std::max(mx, double(x[r * cols + i]));
        for (int i = 0; i < cols; ++i) s += std::exp(x[r * cols + i] - mx);
        for (int i = 0; i < cols; ++i) {
          const double lp = x[r * cols + i] - mx - std::log(s);
          want[r * cols + i] = log ? lp : std::exp(lp);
        }
      }
      EXPECT_LT(testing::MaxNormalizedError(y, want), 1e-6) << cols << " log " << log;
    }
  }
}

TEST(SoftmaxF32, HugeLogitsDoNotOverflow) {
  const std::vector<float> x = {1e30f, 1e30f, -1e30f};
  std::vector<float> y(3);
  ASSERT_TRUE(SoftmaxF32({x.data(), y.data(), 1, 3, false}, nullptr).ok());
  EXPECT_FLOAT_EQ(y[0], 0.5f);
  EXPECT_FLOAT_EQ(y[1], 0.5f);
  EXPECT_FLOAT_EQ(y[2], 0.0f);
  EXPECT_NEAR(LogSumExpF32(x.data(), 3), 1e30, 1e24);
}

}  // namespace
}  // namespace bitloom::kernels
