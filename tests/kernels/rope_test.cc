#include "bitloom/kernels/rope.h"

#include <gtest/gtest.h>

#include <numbers>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

TEST(RopeF32, MatchesRotateHalfFormula) {
  ThreadPool pool(2);
  const int tokens = 7, heads = 3, head_dim = 18;
  const double base = 10000.0;
  auto table = RopeInvFreq(head_dim, base, {});
  ASSERT_TRUE(table.ok()) << table.status();
  auto x = testing::RandomVector(tokens * heads * head_dim, 51);
  const auto x0 = x;
  const std::vector<int32_t> positions = {0, 1, 5, 17, 100, 1000, 4095};
  ASSERT_TRUE(RopeF32({x.data(), positions.data(), &*table, tokens, heads, head_dim}, &pool).ok());
  std::vector<double> want(x.size());
  const int half = head_dim / 2;
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double theta = positions[t] * std::pow(base, -2.0 * i / head_dim);
        const size_t o = (t * heads + h) * head_dim;
        const double x1 = x0[o + i], x2 = x0[o + i + half];
        want[o + i] = x1 * std::cos(theta) - x2 * std::sin(theta);
        want[o + i + half] = x2 * std::cos(theta) + x1 * std::sin(theta);
      }
    }
  }
  // The kernel forms the angle in fp32 like transformers: error ~ position · 2⁻²⁴ rad.
  EXPECT_LT(testing::MaxNormalizedError(x, want), 4096 * 1.2e-7);
}

TEST(RopeF32, PreservesNormAndRelativePositions) {
  const int head_dim = 64;
  auto table = RopeInvFreq(head_dim, 500000.0, {});
  ASSERT_TRUE(table.ok());
  const auto q = testing::RandomVector(head_dim, 52), k = testing::RandomVector(head_dim, 53);
  // q·k after rotation depends only on the position difference.
  auto dot_at = [&](int32_t pq, int32_t pk) {
    auto a = q, b = k;
    EXPECT_TRUE(RopeF32({a.data(), &pq, &*table, 1, 1, head_dim}, nullptr).ok());
    EXPECT_TRUE(RopeF32({b.data(), &pk, &*table, 1, 1, head_dim}, nullptr).ok());
    double s = 0;
    for (int i = 0; i < head_dim; ++i) s += double(a[i]) * b[i];
    return s;
  };
  EXPECT_NEAR(dot_at(10, 3), dot_at(110, 103), 1e-4);
  EXPECT_NEAR(dot_at(0, 0), dot_at(57, 57), 1e-4);
}

TEST(RopeInvFreq, LinearAndLlama3Scaling) {
  const int head_dim = 128;
  const double base = 500000.0;
  auto plain = RopeInvFreq(head_dim, base, {});
  RopeScaling linear{.type = "linear", .factor = 4.0f};
  auto lin = RopeInvFreq(head_dim, base, linear);
  ASSERT_TRUE(plain.ok() && lin.ok());
  for (int i = 0; i < head_dim / 2; ++i) EXPECT_FLOAT_EQ(lin->inv_freq[i], plain->inv_freq[i] / 4.0f);

  // Llama 3.1 parameters.
  RopeScaling l3{.type = "llama3", .factor = 8.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                 .original_max_position_embeddings = 8192};
  auto scaled = RopeInvFreq(head_dim, base, l3);
  ASSERT_TRUE(scaled.ok());
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < head_dim / 2; ++i) {
    const double f = plain->inv_freq[i];
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_EQ(scaled->inv_freq[i], plain->inv_freq[i]);
      ++kept;
    } else if (wavelen > 8192.0) {
      EXPECT_FLOAT_EQ(scaled->inv_freq[i], plain->inv_freq[i] / 8.0f);
      ++divided;
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled->inv_freq[i], (1 - smooth) * f / 8 + smooth * f, 1e-6 * f);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(RopeInvFreq, RejectsBadConfig) {
  EXPECT_FALSE(RopeInvFreq(7, 10000.0, {}).ok());
  EXPECT_FALSE(RopeInvFreq(8, 0.0, {}).ok());
  const auto s = RopeInvFreq(8, 10000.0, {.type = "ntk-magic"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("ntk-magic"), absl::string_view::npos);
}

}  // namespace
}  // namespace bitloom::kernels
