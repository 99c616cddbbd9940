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

// The documented summation order of one output (src/dot.h): 8 lanes, lane l sums the products with
// index ≡ l (mod 8) in increasing index, the k % 8 tail goes to lanes 0.., then a pairwise reduction.
float LaneOrderDot(const float* a, const float* b, int64_t k) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < k; ++i, ++l) acc[l] += a[i] * b[i];
  for (int width = 4; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

// Shapes that cross every tiling boundary of the blocked kernel (register tiles, row panels, weight
// panels, k blocks, the k % 8 tail): each output is exactly the lane-order dot product, plus bias,
// for any thread count and any batch size.
TEST(MatmulF32, BlockedKernelKeepsTheLaneOrderExactly) {
  for (const auto& [m, n, k] : {std::make_tuple(70, 53, 389), std::make_tuple(33, 17, 1536),
                                std::make_tuple(5, 66, 8), std::make_tuple(2, 3, 7), std::make_tuple(1, 200, 576)}) {
    const auto x = RandomVector(m * k, 6);
    const auto w = RandomVector(n * k, 7, 0.1f);
    const auto bias = RandomVector(n, 8);
    for (int threads : {0, 1, 3}) {
      ThreadPool pool(threads);
      std::vector<float> y(m * n);
      ASSERT_TRUE(MatmulF32({x.data(), w.data(), bias.data(), y.data(), m, n, k}, &pool).ok());
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          const float want = LaneOrderDot(x.data() + i * k, w.data() + j * k, k) + bias[j];
          ASSERT_EQ(y[i * n + j], want) << m << "x" << n << "x" << k << " threads " << threads << " at " << i
                                        << "," << j;
        }
      }
    }
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
