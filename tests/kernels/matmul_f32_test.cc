#include "bitloom/kernels/matmul_f32.h"

#include <gtest/gtest.h>

#include <tuple>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

using testing::MaxNormalizedError;
using testing::RandomVector;

std::vector<double> NaiveMatmul(const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>* bias, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? (*bias)[j] : 0.0;
      for (int64_t c = 0; c < k; ++c) s += static_cast<double>(x[i * k + c]) * w[j * k + c];
      y[i * n + j] = s;
    }
  }
  return y;
}

class MatmulShapes : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(MatmulShapes, MatchesDoubleReference) {
  const auto [m, n, k] = GetParam();
  ThreadPool pool(3);
  const auto x = RandomVector(m * k, 1);
  const auto w = RandomVector(n * k, 2, 0.1f);
  const auto bias = RandomVector(n, 3);
  for (bool with_bias : {false, true}) {
    std::vector<float> y(m * n, -1.0f);
    MatmulF32Params p{x.data(), w.data(), with_bias ? bias.data() : nullptr, y.data(), m, n, k};
    ASSERT_TRUE(MatmulF32(p, &pool).ok());
    const auto want = NaiveMatmul(x, w, with_bias ? &bias : nullptr, m, n, k);
    // fp32 accumulation over k terms: error grows like √k·2⁻²⁴ relative to Σ|x·w|.
    EXPECT_LT(MaxNormalizedError(y, want), 2e-6 * std::sqrt(static_cast<double>(k) + 1.0))
        << m << "x" << n << "x" << k;
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, MatmulShapes,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 7, 3),
                                           std::make_tuple(3, 5, 17), std::make_tuple(17, 33, 65),
                                           std::make_tuple(1, 131, 257), std::make_tuple(9, 258, 96),
                                           std::make_tuple(64, 67, 576)));

TEST(MatmulF32, RowResultIndependentOfBatchAndThreads) {
  // The engine's prefill == decode guarantee rests on this: a row's bits do not depend on m or threads.
  const int m = 13, n = 37, k = 71;
  const auto x = RandomVector(m * k, 4);
  const auto w = RandomVector(n * k, 5);
  std::vector<float> batched(m * n);
  ThreadPool pool(2);
  ASSERT_TRUE(MatmulF32({x.data(), w.data(), nullptr, batched.data(), m, n, k}, &pool).ok());
  for (int i = 0; i < m; ++i) {
    std::vector<float> single(n);
    ASSERT_TRUE(MatmulF32({x.data() + i * k, w.data(), nullptr, single.data(), 1, n, k}, nullptr).ok());
    for (int j = 0; j < n; ++j) ASSERT_EQ(single[j], batched[i * n + j]) << i << "," << j;
  }
}

TEST(MatmulF32, RejectsBadArguments) {
  float v = 0;
  EXPECT_EQ(MatmulF32({&v, &v, nullptr, &v, -1, 1, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MatmulF32({nullptr, &v, nullptr, &v, 1, 1, 1}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MatmulF32({nullptr, nullptr, nullptr, nullptr, 0, 5, 5}, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::kernels
