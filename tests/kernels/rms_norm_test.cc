#include "bitloom/kernels/rms_norm.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

TEST(RmsNormF32, MatchesDoubleReferenceWithAndWithoutOffset) {
  ThreadPool pool(2);
  for (int dim : {1, 7, 64, 577}) {
    for (float offset : {0.0f, 1.0f}) {
      const int rows = 37;
      const auto x = testing::RandomVector(rows * dim, 11, 3.0f);
      const auto w = testing::RandomVector(dim, 12, 0.5f);
      std::vector<float> y(x.size());
      const float eps = 1e-5f;
      ASSERT_TRUE(RmsNormF32({x.data(), w.data(), y.data(), rows, dim, eps, offset}, &pool).ok());
      std::vector<double> want(x.size());
      for (int r = 0; r < rows; ++r) {
        double ss = 0;
        for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
        const double inv = 1.0 / std::sqrt(ss / dim + eps);
        for (int i = 0; i < dim; ++i) want[r * dim + i] = x[r * dim + i] * inv * (w[i] + double(offset));
      }
      EXPECT_LT(testing::MaxNormalizedError(y, want), 1e-6) << dim << " offset " << offset;
    }
  }
}

TEST(RmsNormF32, InPlaceAndErrors) {
  std::vector<float> x = {3.0f, 4.0f};
  const std::vector<float> w = {1.0f, 1.0f};
  ASSERT_TRUE(RmsNormF32({x.data(), w.data(), x.data(), 1, 2, 0.0f, 0.0f}, nullptr).ok());
  // rms = sqrt((9 + 16) / 2)
  EXPECT_NEAR(x[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(x[1], 4.0 / std::sqrt(12.5), 1e-6);
  EXPECT_EQ(RmsNormF32({x.data(), w.data(), x.data(), 1, 0, 0.0f, 0.0f}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitloom::kernels
