#include "bitloom/engine/generate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "bitloom/engine/sampler.h"
#include "bitloom/engine/scoring.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::SyntheticConfig("llama");
    weights_ = testing::SyntheticWeights(config_, 77);
    auto m = DecoderModel::Load(config_, weights_, &pool_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  // Greedy by hand: a fresh full forward for every step, no cache reuse.
  std::vector<int32_t> GreedyByHand(std::vector<int32_t> ids, int steps) {
    std::vector<int32_t> out;
    for (int s = 0; s < steps; ++s) {
      KvCache cache = model_->NewKvCache(static_cast<int>(ids.size()));
      std::vector<int32_t> pos(ids.size());
      std::iota(pos.begin(), pos.end(), 0);
      auto logits = model_->Forward(ids, pos, cache, DecoderModel::Logits::kLast);
      EXPECT_TRUE(logits.ok());
      out.push_back(ArgMax(*logits));
      ids.push_back(out.back());
    }
    return out;
  }
  static std::vector<int32_t> Ids(const GenerationResult& r) {
    std::vector<int32_t> v;
    for (const auto& t : r.tokens) v.push_back(t.id);
    return v;
  }
  ThreadPool pool_{2};
  v1::ModelConfig config_;
  InMemoryWeightSource weights_;
  std::unique_ptr<DecoderModel> model_;
};

TEST_F(GenerateTest, GreedyMatchesRecomputingFromScratch) {
  const std::vector<int32_t> prompt = {5, 17, 33, 8};
  GenerationParams p;
  p.max_new_tokens = 10;
  p.ignore_eos = true;
  auto r = Generate(*model_, prompt, p, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  EXPECT_EQ(Ids(*r), GreedyByHand(prompt, 10));
}

TEST_F(GenerateTest, StopsOnStopTokenAndEos) {
  const std::vector<int32_t> prompt = {5, 17, 33, 8};
  const auto greedy = GreedyByHand(prompt, 6);
  GenerationParams p;
  p.max_new_tokens = 6;
  p.stop_token_ids = {static_cast<uint32_t>(greedy[3])};
  auto r = Generate(*model_, prompt, p, {});
  ASSERT_TRUE(r.ok());
  const size_t first = std::find(greedy.begin(), greedy.end(), greedy[3]) - greedy.begin();
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(Ids(*r), std::vector<int32_t>(greedy.begin(), greedy.begin() + first + 1));

  GenerationParams q;
  q.max_new_tokens = 6;
  GenerateOptions o;
  o.eos_token_ids = {greedy[0]};
  r = Generate(*model_, prompt, q, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->tokens.size(), 1u);
  q.ignore_eos = true;
  r = Generate(*model_, prompt, q, o);
  EXPECT_EQ(r->tokens.size(), 6u);
}

TEST_F(GenerateTest, SeededSamplingIsDeterministicAndCancelStops) {
  GenerationParams p;
  p.temperature = 1.0f;
  p.top_p = 0.95f;
  p.seed = 1234;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  p.logprobs = true;
  p.top_logprobs = 3;
  const std::vector<int32_t> prompt = {1, 2, 3};
  auto a = Generate(*model_, prompt, p, {});
  auto b = Generate(*model_, prompt, p, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Ids(*a), Ids(*b));
  EXPECT_EQ(a->seed, 1234u);
  for (const auto& t : a->tokens) {
    EXPECT_LE(t.logprob, 0.0f);
    ASSERT_EQ(t.top_logprobs.size(), 3u);
    EXPECT_GE(t.top_logprobs[0].second, t.top_logprobs[1].second);
  }
  GenerateOptions o;
  int seen = 0;
  o.on_token = [&seen](const GeneratedToken&) { return ++seen < 4; };
  auto c = Generate(*model_, prompt, p, o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(c->tokens.size(), 4u);
}

TEST_F(GenerateTest, ContextAndArgumentErrors) {
  GenerationParams p;
  GenerateOptions o;
  o.context_length = 8;
  const std::vector<int32_t> long_prompt(8, 1);
  auto r = Generate(*model_, long_prompt, p, o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("context of 8"), absl::string_view::npos) << r.status();
  p.max_new_tokens = 7;
  r = Generate(*model_, std::vector<int32_t>{1, 2}, p, o);
  EXPECT_EQ(r.status().message(), "max_new_tokens: 7 is outside [1, 6] (context 8 − prompt 2)");
  p.max_new_tokens = 0;  // up to the context
  p.ignore_eos = true;
  r = Generate(*model_, std::vector<int32_t>{1, 2}, p, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens.size(), 6u);
  EXPECT_EQ(Generate(*model_, std::vector<int32_t>{500}, p, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StopStringMatcher, HoldsBackPartialMatchesAndStopsAtEarliest) {
  StopStringMatcher m({"</s>", "\n\nUser"});
  EXPECT_EQ(m.Update("Hello"), 5u);
  EXPECT_EQ(m.Update("Hello <"), 6u);  // "<" may start "</s>"
  EXPECT_EQ(m.Update("Hello </"), 6u);
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Update("Hello <b"), 8u);
  EXPECT_EQ(m.Update("Hi\n\nUs"), 2u);
  EXPECT_EQ(m.Update("Hi\n\nUser: x </s>"), 2u);
  EXPECT_TRUE(m.stopped());
}

TEST_F(GenerateTest, ScoreTokensMatchesForwardLogSoftmax) {
  const std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46};
  auto scores = ScoreTokens(*model_, ids, /*chunk_tokens=*/4);
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->logprobs.size(), ids.size() - 1);
  KvCache cache = model_->NewKvCache(static_cast<int>(ids.size()));
  std::vector<int32_t> pos(ids.size());
  std::iota(pos.begin(), pos.end(), 0);
  auto logits = model_->Forward(ids, pos, cache, DecoderModel::Logits::kAll);
  ASSERT_TRUE(logits.ok());
  const int vocab = model_->vocab_size();
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const float* row = logits->data() + i * vocab;
    double z = 0;
    for (int v = 0; v < vocab; ++v) z += std::exp(double(row[v]));
    EXPECT_NEAR(scores->logprobs[i], row[ids[i + 1]] - std::log(z), 1e-5);
    EXPECT_EQ(scores->greedy[i], ArgMax({row, static_cast<size_t>(vocab)}) == ids[i + 1]);
  }
  EXPECT_EQ(ScoreTokens(*model_, std::vector<int32_t>{1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GenerateTest, PerplexityProtocol) {
  std::vector<int32_t> ids(40);
  for (int i = 0; i < 40; ++i) ids[i] = (i * 37 + 11) % 101;
  // One window covering everything equals the plain average over ScoreTokens.
  auto scores = ScoreTokens(*model_, ids);
  ASSERT_TRUE(scores.ok());
  double nll = 0;
  for (float lp : scores->logprobs) nll -= lp;
  auto one = EvaluatePerplexity(*model_, ids, {.context_length = 64, .stride = 64});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->tokens_scored, 39);
  EXPECT_EQ(one->windows, 1);
  EXPECT_NEAR(one->nll_sum, nll, 1e-4);
  EXPECT_NEAR(one->perplexity, std::exp(nll / 39), 1e-3);
  // Sliding windows score every token but the first exactly once.
  auto sliding = EvaluatePerplexity(*model_, ids, {.context_length = 16, .stride = 6});
  ASSERT_TRUE(sliding.ok());
  EXPECT_EQ(sliding->tokens_scored, 39);
  EXPECT_EQ(sliding->windows, 5);  // starts 0, 6, 12, 18, 24 (ends 16, 22, 28, 34, 40)
  // Non-overlapping windows (stride == context): a window's first token has no context inside it and
  // is not scored, so 3 of the 39 targets (ids[10], ids[20], ids[30]) are skipped.
  auto disjoint = EvaluatePerplexity(*model_, ids, {.context_length = 10, .stride = 10});
  ASSERT_TRUE(disjoint.ok());
  EXPECT_EQ(disjoint->tokens_scored, 36);
  EXPECT_EQ(EvaluatePerplexity(*model_, ids, {.context_length = 8, .stride = 9}).status().message(),
            "stride: 9 is outside [1, context_length = 8]");
}

}  // namespace
}  // namespace bitloom::engine
