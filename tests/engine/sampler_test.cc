#include "bitloom/engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

#include "bitloom/engine/generation_params.h"

namespace bitloom::engine {
namespace {

// Logits whose softmax at temperature 1 is exactly `probs`.
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<int> Support(const std::vector<double>& p) {
  std::vector<int> s;
  for (size_t i = 0; i < p.size(); ++i) if (p[i] > 0) s.push_back(static_cast<int>(i));
  return s;
}

GenerationParams Sampling(float temperature) {
  GenerationParams p;
  p.temperature = temperature;
  p.seed = 42;
  return p;
}

const std::vector<double> kProbs = {0.05, 0.30, 0.15, 0.40, 0.02, 0.08};  // sorted: 3, 1, 2, 5, 0, 4

TEST(Sampler, GreedyAtTemperatureZeroTakesArgmaxLowestIdOnTies) {
  Sampler s(Sampling(0.0f));
  EXPECT_EQ(s.Sample(LogitsFor(kProbs), {}, {}), 3);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 5.0f, 5.0f}, {}, {}), 1);
}

TEST(Sampler, TopKMaskIsExact) {
  GenerationParams p = Sampling(1.0f);
  p.top_k = 3;
  const auto d = Sampler(p).Distribution(LogitsFor(kProbs));
  EXPECT_EQ(Support(d), (std::vector<int>{1, 2, 3}));
  EXPECT_NEAR(d[3], 0.40 / 0.85, 1e-6);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingMass) {
  GenerationParams p = Sampling(1.0f);
  p.top_p = 0.70f;  // 0.40 + 0.30 = 0.70 reaches it
  EXPECT_EQ(Support(Sampler(p).Distribution(LogitsFor(kProbs))), (std::vector<int>{1, 3}));
  p.top_p = 0.71f;  // needs the 0.15 too
  EXPECT_EQ(Support(Sampler(p).Distribution(LogitsFor(kProbs))), (std::vector<int>{1, 2, 3}));
  p.top_p = 0.01f;  // always at least one
  EXPECT_EQ(Support(Sampler(p).Distribution(LogitsFor(kProbs))), (std::vector<int>{3}));
}

TEST(Sampler, MinPIsRelativeToTheMax) {
  GenerationParams p = Sampling(1.0f);
  p.min_p = 0.19f;  // threshold 0.076: keeps 0.40, 0.30, 0.15, 0.08
  EXPECT_EQ(Support(Sampler(p).Distribution(LogitsFor(kProbs))), (std::vector<int>{1, 2, 3, 5}));
  p.min_p = 0.21f;  // threshold 0.084: drops 0.08
  EXPECT_EQ(Support(Sampler(p).Distribution(LogitsFor(kProbs))), (std::vector<int>{1, 2, 3}));
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const auto cold = Sampler(Sampling(0.5f)).Distribution(LogitsFor(kProbs));
  const auto hot = Sampler(Sampling(2.0f)).Distribution(LogitsFor(kProbs));
  EXPECT_GT(cold[3], 0.40);
  EXPECT_LT(hot[3], 0.40);
  // p^(1/T) renormalised.
  double z = 0;
  for (double q : kProbs) z += q * q;
  EXPECT_NEAR(cold[1], 0.09 / z, 1e-6);
}

TEST(Sampler, SeededDeterminismAndEmpiricalDistribution) {
  const auto logits = LogitsFor(kProbs);
  Sampler a(Sampling(1.0f)), b(Sampling(1.0f));
  GenerationParams other = Sampling(1.0f);
  other.seed = 43;
  Sampler c(other);
  std::vector<int> counts(kProbs.size());
  int differ = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int x = a.Sample(logits, {}, {});
    ASSERT_EQ(x, b.Sample(logits, {}, {}));
    differ += x != c.Sample(logits, {}, {});
    ++counts[x];
  }
  EXPECT_GT(differ, n / 4);
  for (size_t i = 0; i < kProbs.size(); ++i) {
    const double sd = std::sqrt(kProbs[i] * (1 - kProbs[i]) / n);
    EXPECT_NEAR(counts[i] / double(n), kProbs[i], 5 * sd) << "token " << i;
  }
}

TEST(Sampler, MaskedTokensAreNeverSampled) {
  GenerationParams p = Sampling(1.5f);
  p.top_k = 4;
  p.top_p = 0.9f;
  p.min_p = 0.3f;
  Sampler s(p);
  const auto support = Support(s.Distribution(LogitsFor(kProbs)));
  for (int i = 0; i < 2000; ++i) {
    const int x = s.Sample(LogitsFor(kProbs), {}, {});
    EXPECT_NE(std::find(support.begin(), support.end(), x), support.end()) << x;
  }
}

TEST(Sampler, Penalties) {
  GenerationParams p = Sampling(1.0f);
  p.repetition_penalty = 2.0f;
  const std::vector<float> logits = {4.0f, -4.0f, 4.0f, -4.0f, 1.0f};
  const std::vector<int32_t> prompt = {0, 1}, output = {};
  auto out = Sampler(p).ApplyPenalties(logits, prompt, output);
  EXPECT_EQ(out, (std::vector<float>{2.0f, -8.0f, 4.0f, -4.0f, 1.0f}));

  GenerationParams q = Sampling(1.0f);
  q.presence_penalty = 0.5f;
  q.frequency_penalty = 0.25f;
  const std::vector<int32_t> generated = {2, 2, 4};
  out = Sampler(q).ApplyPenalties(logits, prompt, generated);  // prompt tokens are not penalised
  EXPECT_EQ(out, (std::vector<float>{4.0f, -4.0f, 4.0f - 0.5f - 0.5f, -4.0f, 1.0f - 0.5f - 0.25f}));

  // Greedy respects penalties.
  GenerationParams g = Sampling(0.0f);
  g.repetition_penalty = 2.0f;
  EXPECT_EQ(Sampler(g).Sample(std::vector<float>{3.0f, 2.0f}, std::vector<int32_t>{0}, {}), 1);
}

TEST(GenerationParams, ValidateNamesFieldAndLimit) {
  auto message = [](GenerationParams p) { return std::string(p.Validate(100).message()); };
  EXPECT_TRUE(GenerationParams{}.Validate(100).ok());
  GenerationParams p;
  p.top_p = 1.5f;
  EXPECT_EQ(p.Validate(100).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(message(p), "top_p: 1.5 is outside (0, 1]");
  p = {};
  p.temperature = 2.5f;
  EXPECT_EQ(message(p), "temperature: 2.5 is outside [0, 2]");
  p = {};
  p.temperature = NAN;
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = {};
  p.top_k = 101;
  EXPECT_EQ(message(p), "top_k: 101 is outside 0 (off) or [1, 100]");
  p = {};
  p.min_p = 1.0f;
  EXPECT_EQ(message(p), "min_p: 1 is outside [0, 1)");
  p = {};
  p.repetition_penalty = 0.2f;
  EXPECT_EQ(message(p), "repetition_penalty: 0.2 is outside 0 (off) or [0.5, 2]");
  p = {};
  p.frequency_penalty = -3.0f;
  EXPECT_EQ(message(p), "frequency_penalty: -3 is outside [-2, 2]");
  p = {};
  p.stop = {"ok", ""};
  EXPECT_EQ(message(p), "stop[1]: length 0 is outside [1, 256] bytes");
  p = {};
  p.stop_token_ids = {5, 100};
  EXPECT_EQ(message(p), "stop_token_ids[1]: 100 is outside [0, 100)");
  p = {};
  p.top_logprobs = 21;
  EXPECT_EQ(message(p), "top_logprobs: 21 is outside [0, 20]");
}

TEST(GenerationParams, FromProtoCopiesEveryField) {
  v1::SamplingParams s;
  s.set_temperature(0.7f);
  s.set_top_k(40);
  s.set_top_p(0.9f);
  s.set_min_p(0.05f);
  s.set_repetition_penalty(1.1f);
  s.set_presence_penalty(0.2f);
  s.set_frequency_penalty(0.3f);
  s.set_seed(9);
  s.add_stop("\n\n");
  s.add_stop_token_ids(7);
  s.set_max_new_tokens(12);
  s.set_top_logprobs(3);
  s.set_logprobs(true);
  s.set_ignore_eos(true);
  const GenerationParams g = GenerationParams::FromProto(s);
  EXPECT_EQ(g.temperature, 0.7f);
  EXPECT_EQ(g.top_k, 40u);
  EXPECT_EQ(g.top_p, 0.9f);
  EXPECT_EQ(g.min_p, 0.05f);
  EXPECT_EQ(g.repetition_penalty, 1.1f);
  EXPECT_EQ(g.presence_penalty, 0.2f);
  EXPECT_EQ(g.frequency_penalty, 0.3f);
  EXPECT_EQ(g.seed, 9u);
  EXPECT_EQ(g.stop, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(g.stop_token_ids, std::vector<uint32_t>{7});
  EXPECT_EQ(g.max_new_tokens, 12u);
  EXPECT_EQ(g.top_logprobs, 3u);
  EXPECT_TRUE(g.logprobs);
  EXPECT_TRUE(g.ignore_eos);
}

}  // namespace
}  // namespace bitloom::engine
