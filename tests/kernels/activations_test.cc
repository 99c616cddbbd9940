#include "bitloom/kernels/activations.h"

#include <gtest/gtest.h>

#include <numbers>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

TEST(GatedActivationF32, SiluAndGeluTanhMatchFormulas) {
  ThreadPool pool(2);
  const int rows = 3, dim = 4099;  // crosses the 4096-element chunk boundary
  const auto gate = testing::RandomVector(rows * dim, 31, 4.0f);
  const auto up = testing::RandomVector(rows * dim, 32);
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    std::vector<float> out(gate.size());
    ASSERT_TRUE(GatedActivationF32({gate.data(), up.data(), out.data(), rows, dim, act}, &pool).ok());
    std::vector<double> want(gate.size());
    for (size_t i = 0; i < gate.size(); ++i) {
      const double g = gate[i];
      const double a = act == Activation::kSilu
                           ? g / (1 + std::exp(-g))
                           : 0.5 * g * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (g + 0.044715 * g * g * g)));
      want[i] = a * up[i];
    }
    EXPECT_LT(testing::MaxNormalizedError(out, want), 1e-6);
  }
}

TEST(Activations, KnownValues) {
  EXPECT_FLOAT_EQ(SiluF32(0.0f), 0.0f);
  EXPECT_NEAR(SiluF32(1.0f), 0.7310585786, 1e-7);
  EXPECT_NEAR(GeluTanhF32(1.0f), 0.8411919906, 1e-6);
  EXPECT_NEAR(GeluTanhF32(-3.0f), -0.0036373920, 1e-7);
  std::vector<float> x = {0.0f, 100.0f, -100.0f, 1.0f};
  SoftcapF32(x.data(), 4, 30.0f);
  EXPECT_FLOAT_EQ(x[0], 0.0f);
  EXPECT_NEAR(x[1], 30.0 * std::tanh(100.0 / 30.0), 1e-5);
  EXPECT_NEAR(x[2], -30.0 * std::tanh(100.0 / 30.0), 1e-5);
  EXPECT_NEAR(x[3], 30.0 * std::tanh(1.0 / 30.0), 1e-7);
}

}  // namespace
}  // namespace bitloom::kernels
