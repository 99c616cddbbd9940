#include "bitloom/kernels/attention.h"

#include <gtest/gtest.h>

#include <tuple>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

std::vector<double> NaiveAttention(const AttentionParams& p) {
  std::vector<double> out(p.num_tokens * p.num_heads * p.head_dim, 0.0);
  const int64_t group = p.num_heads / p.num_kv_heads;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const int64_t g = h / group;
      std::vector<double> s(p.num_kv, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < p.num_kv; ++j) {
        const int64_t qp = p.q_positions[t], kp = p.kv_positions[j];
        if (kp > qp || (p.sliding_window > 0 && qp - kp >= p.sliding_window)) continue;
        double d = 0;
        for (int64_t c = 0; c < p.head_dim; ++c) {
          d += double(p.q[(t * p.num_heads + h) * p.head_dim + c]) *
               p.k[(j * p.num_kv_heads + g) * p.head_dim + c];
        }
        d *= p.scale;
        if (p.logit_softcap > 0) d = p.logit_softcap * std::tanh(d / p.logit_softcap);
        s[j] = d;
        mx = std::max(mx, d);
      }
      double z = 0;
      for (double& v : s) z += (v = std::exp(v - mx));
      for (int64_t j = 0; j < p.num_kv; ++j) {
        for (int64_t c = 0; c < p.head_dim; ++c) {
          out[(t * p.num_heads + h) * p.head_dim + c] +=
              s[j] / z * p.v[(j * p.num_kv_heads + g) * p.head_dim + c];
        }
      }
    }
  }
  return out;
}

// (num_tokens, past, heads, kv_heads, head_dim, window, softcap)
class AttentionShapes
    : public ::testing::TestWithParam<std::tuple<int, int, int, int, int, int, float>> {};

TEST_P(AttentionShapes, MatchesDoubleReference) {
  const auto [tokens, past, heads, kv_heads, head_dim, window, softcap] = GetParam();
  const int num_kv = past + tokens;
  const auto q = testing::RandomVector(tokens * heads * head_dim, 61);
  const auto k = testing::RandomVector(num_kv * kv_heads * head_dim, 62);
  const auto v = testing::RandomVector(num_kv * kv_heads * head_dim, 63);
  std::vector<int32_t> qpos(tokens), kpos(num_kv);
  for (int j = 0; j < num_kv; ++j) kpos[j] = j;
  for (int t = 0; t < tokens; ++t) qpos[t] = past + t;
  std::vector<float> out(q.size(), NAN);
  AttentionParams p{q.data(), k.data(), v.data(), qpos.data(), kpos.data(), out.data(), tokens, num_kv,
                    heads, kv_heads, head_dim, 1.0f / std::sqrt(float(head_dim)), softcap, window};
  ThreadPool pool(2);
  ASSERT_TRUE(AttentionF32(p, &pool).ok());
  EXPECT_LT(testing::MaxNormalizedError(out, NaiveAttention(p)), 2e-6);
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, AttentionShapes,
    ::testing::Values(std::make_tuple(1, 0, 1, 1, 2, 0, 0.0f), std::make_tuple(5, 0, 4, 2, 16, 0, 0.0f),
                      std::make_tuple(1, 30, 6, 2, 18, 0, 0.0f), std::make_tuple(13, 7, 9, 3, 64, 0, 0.0f),
                      std::make_tuple(17, 4, 4, 1, 32, 5, 0.0f), std::make_tuple(3, 40, 8, 8, 8, 9, 0.0f),
                      std::make_tuple(11, 2, 2, 1, 24, 0, 50.0f)));

TEST(AttentionF32, KeyOutsideWindowHasNoInfluence) {
  const int heads = 2, kv_heads = 1, head_dim = 8, num_kv = 10, window = 4;
  const auto q = testing::RandomVector(heads * head_dim, 64);
  auto k = testing::RandomVector(num_kv * head_dim, 65);
  auto v = testing::RandomVector(num_kv * head_dim, 66);
  std::vector<int32_t> kpos(num_kv);
  for (int j = 0; j < num_kv; ++j) kpos[j] = j;
  const int32_t qpos = 9;  // sees keys 6, 7, 8, 9
  std::vector<float> a(q.size()), b(q.size());
  AttentionParams p{q.data(), k.data(), v.data(), &qpos, kpos.data(), a.data(), 1, num_kv, heads, kv_heads,
                    head_dim, 0.3f, 0.0f, window};
  ASSERT_TRUE(AttentionF32(p, nullptr).ok());
  for (int c = 0; c < head_dim; ++c) k[5 * head_dim + c] = v[5 * head_dim + c] = 1e3f;  // key 5: just out
  p.out = b.data();
  ASSERT_TRUE(AttentionF32(p, nullptr).ok());
  EXPECT_EQ(a, b);
  for (int c = 0; c < head_dim; ++c) v[6 * head_dim + c] += 1.0f;  // key 6: just in
  ASSERT_TRUE(AttentionF32(p, nullptr).ok());
  EXPECT_NE(a, b);
}

TEST(AttentionF32, RejectsHeadsNotDivisible) {
  float x = 0;
  int32_t pos = 0;
  AttentionParams p{&x, &x, &x, &pos, &pos, &x, 1, 1, 3, 2, 1, 1.0f, 0.0f, 0};
  EXPECT_EQ(AttentionF32(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitloom::kernels
