// Evaluation (windows, perplexity, KL divergence, top-1) on tiny synthetic models: the windowing
// covers every token exactly once, perplexity is exp of the mean NLL computed independently through
// ScoreTokens, a model against itself has KL 0 and full agreement, KL of a perturbed model matches a
// direct computation from its logits, and the scorer path (inferd's ScoreTokens) agrees.
#include "bitloom/engine/evaluation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "bitloom/engine/sampler.h"
#include "bitloom/formats/tensor_names.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

using testing::SyntheticConfig;
using testing::SyntheticWeights;

std::vector<int32_t> Tokens(int n, int vocab, uint64_t seed = 11) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (int& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

std::unique_ptr<DecoderModel> Load(const v1::ModelConfig& c, const WeightSource& w) {
  auto m = DecoderModel::Load(c, w, nullptr);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

TEST(EvaluationWindows, DisjointWindowsHoldEveryTokenOnceAndSkipTheirFirst) {
  for (int64_t n : {2, 15, 16, 17, 33, 100}) {
    auto windows = MakeEvaluationWindows(n, 16, 16);
    ASSERT_TRUE(windows.ok()) << windows.status();
    std::vector<int> in_window(n, 0), target(n, 0);
    for (const EvaluationWindow& w : *windows) {
      EXPECT_EQ(w.first_target, w.begin + 1);
      for (int64_t t = w.begin; t < w.end; ++t) ++in_window[t];
      for (int64_t t = w.first_target; t < w.end; ++t) ++target[t];
    }
    for (int64_t t = 0; t < n; ++t) {
      // A single trailing token forms no window of its own (nothing to predict it from).
      const bool lone_tail = t == n - 1 && t % 16 == 0;
      EXPECT_EQ(in_window[t], lone_tail ? 0 : 1) << "n " << n << " token " << t;
      EXPECT_EQ(target[t], (t % 16 == 0) ? 0 : 1) << "n " << n << " token " << t;
    }
  }
}

TEST(EvaluationWindows, SlidingWindowsScoreEveryTokenButTheFirstOnce) {
  for (auto [n, ctx, stride] : std::vector<std::tuple<int64_t, int, int>>{
           {100, 16, 5}, {100, 16, 1}, {17, 16, 8}, {3, 16, 4}, {64, 16, 15}}) {
    auto windows = MakeEvaluationWindows(n, ctx, stride);
    ASSERT_TRUE(windows.ok()) << windows.status();
    std::vector<int> target(n, 0);
    for (const EvaluationWindow& w : *windows) {
      EXPECT_LE(w.end - w.begin, ctx);
      EXPECT_GT(w.first_target, w.begin);
      for (int64_t t = w.first_target; t < w.end; ++t) ++target[t];
    }
    EXPECT_EQ(target[0], 0);
    for (int64_t t = 1; t < n; ++t) EXPECT_EQ(target[t], 1) << n << "/" << ctx << "/" << stride << " token " << t;
  }
}

TEST(EvaluationWindows, RejectsBadProtocols) {
  EXPECT_TRUE(absl::IsInvalidArgument(MakeEvaluationWindows(10, 1, 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MakeEvaluationWindows(10, 8, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MakeEvaluationWindows(10, 8, 9).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MakeEvaluationWindows(1, 8, 8).status()));
}

class EvaluationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = SyntheticConfig("llama");
    weights_ = SyntheticWeights(config_, 99);
    model_ = Load(config_, weights_);
    ASSERT_NE(model_, nullptr);
    ids_ = Tokens(150, config_.vocab_size());
  }
  v1::ModelConfig config_;
  InMemoryWeightSource weights_;
  std::unique_ptr<DecoderModel> model_;
  std::vector<int32_t> ids_;
};

TEST_F(EvaluationTest, PerplexityIsExpOfMeanNllFromScoreTokens) {
  for (auto [ctx, stride] : std::vector<std::pair<int, int>>{{32, 32}, {40, 13}}) {
    EvaluationProtocol p;
    p.context_length = ctx;
    p.stride = stride;
    p.chunk_tokens = 7;  // chunks that straddle first targets
    auto result = EvaluateModels(*model_, nullptr, ids_, p);
    ASSERT_TRUE(result.ok()) << result.status();

    // Independently: score each window from scratch and sum the targets' NLL.
    auto windows = MakeEvaluationWindows(static_cast<int64_t>(ids_.size()), ctx, stride);
    ASSERT_TRUE(windows.ok());
    double nll = 0.0;
    int64_t targets = 0, correct = 0;
    for (const EvaluationWindow& w : *windows) {
      auto scores = ScoreTokens(*model_, absl::MakeConstSpan(ids_).subspan(w.begin, w.end - w.begin));
      ASSERT_TRUE(scores.ok()) << scores.status();
      for (int64_t t = w.first_target; t < w.end; ++t) {
        nll -= scores->logprobs[t - w.begin - 1];
        correct += scores->greedy[t - w.begin - 1];
        ++targets;
      }
    }
    EXPECT_EQ(result->targets, targets);
    EXPECT_EQ(result->model.top1_correct, correct);
    EXPECT_NEAR(result->model.Perplexity(), std::exp(nll / static_cast<double>(targets)),
                1e-6 * result->model.Perplexity());  // ScoreTokens rounds each logprob to float
    EXPECT_FALSE(result->has_reference);
    EXPECT_FALSE(result->has_divergence);

    // And the engine's EvaluatePerplexity, the same protocol in double throughout: equal.
    PerplexityOptions po;
    po.context_length = ctx;
    po.stride = stride;
    auto ppl = EvaluatePerplexity(*model_, ids_, po);
    ASSERT_TRUE(ppl.ok()) << ppl.status();
    EXPECT_EQ(ppl->tokens_scored, result->targets);
    EXPECT_NEAR(ppl->perplexity, result->model.Perplexity(), 1e-12 * ppl->perplexity);
  }
}

TEST_F(EvaluationTest, ModelAgainstItselfHasZeroKlAndFullAgreement) {
  EvaluationProtocol p;
  p.context_length = 48;
  p.stride = 48;
  int64_t last_progress = -1, progress_total = -1;
  auto result = EvaluateModels(*model_, model_.get(), ids_, p, [&](int64_t done, int64_t total) {
    EXPECT_GT(done, last_progress);
    last_progress = done;
    progress_total = total;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->has_divergence);
  EXPECT_EQ(result->kl_sum, 0.0);
  EXPECT_EQ(result->kl_max, 0.0);
  EXPECT_EQ(result->Top1Agreement(), 1.0);
  EXPECT_EQ(result->reference.nll_sum, result->model.nll_sum);
  EXPECT_EQ(result->targets, 150 - 4);  // 4 windows (48, 48, 48, 6 tokens), each skips its first
  EXPECT_EQ(last_progress, result->targets);
  EXPECT_EQ(progress_total, result->targets);
}

TEST_F(EvaluationTest, KlOfAPerturbedModelMatchesADirectComputation) {
  InMemoryWeightSource perturbed = SyntheticWeights(config_, 99);
  WeightTensor* w = perturbed.Find(formats::LayerTensor(1, "mlp.down_proj.weight"));
  ASSERT_NE(w, nullptr);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  for (float& x : w->data) x += noise(rng);
  auto other = Load(config_, perturbed);
  ASSERT_NE(other, nullptr);

  EvaluationProtocol p;
  p.context_length = 64;
  p.stride = 64;
  p.max_tokens = 100;  // windows [0, 64), [64, 100)
  auto result = EvaluateModels(*other, model_.get(), ids_, p);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->windows, 2);
  EXPECT_EQ(result->targets, 98);

  // Direct: full logits of each window, softmax in double, KL(ref ‖ model) per target.
  double kl_sum = 0.0;
  int64_t agree = 0;
  const int vocab = config_.vocab_size();
  for (auto [begin, end] : std::vector<std::pair<int, int>>{{0, 64}, {64, 100}}) {
    std::vector<int32_t> tokens(ids_.begin() + begin, ids_.begin() + end), positions(end - begin);
    for (int i = 0; i < end - begin; ++i) positions[i] = i;
    KvCache c1 = model_->NewKvCache(end - begin), c2 = other->NewKvCache(end - begin);
    auto ref = model_->Forward(tokens, positions, c1, DecoderModel::Logits::kAll);
    auto mod = other->Forward(tokens, positions, c2, DecoderModel::Logits::kAll);
    ASSERT_TRUE(ref.ok() && mod.ok());
    for (int i = 0; i + 1 < end - begin; ++i) {
      const float* r = ref->data() + i * vocab;
      const float* m = mod->data() + i * vocab;
      double zr = 0, zm = 0;
      for (int v = 0; v < vocab; ++v) {
        zr += std::exp(double(r[v]));
        zm += std::exp(double(m[v]));
      }
      double kl = 0;
      for (int v = 0; v < vocab; ++v) {
        const double pr = std::exp(double(r[v])) / zr, pm = std::exp(double(m[v])) / zm;
        kl += pr * std::log(pr / pm);
      }
      kl_sum += kl;
      agree += ArgMax(absl::MakeConstSpan(r, vocab)) == ArgMax(absl::MakeConstSpan(m, vocab));
    }
  }
  EXPECT_GT(result->MeanKl(), 1e-5);
  EXPECT_NEAR(result->kl_sum, kl_sum, 1e-9 + 1e-9 * kl_sum);
  EXPECT_EQ(result->top1_agree, agree);
  EXPECT_GE(result->kl_max * static_cast<double>(result->targets), result->kl_sum);
}

TEST_F(EvaluationTest, ScorersGiveTheSamePerplexityAndTop1) {
  EvaluationProtocol p;
  p.context_length = 40;
  p.stride = 40;
  auto in_process = EvaluateModels(*model_, model_.get(), ids_, p);
  ASSERT_TRUE(in_process.ok()) << in_process.status();
  int calls = 0;
  WindowScorer scorer = [&](absl::Span<const int32_t> window) {
    ++calls;
    return ScoreTokens(*model_, window);
  };
  auto scored = EvaluateScorers(scorer, &scorer, ids_, p);
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(calls, 2 * 4);
  EXPECT_FALSE(scored->has_divergence);
  EXPECT_TRUE(scored->has_reference);
  EXPECT_EQ(scored->targets, in_process->targets);
  EXPECT_EQ(scored->windows, in_process->windows);
  EXPECT_EQ(scored->model.top1_correct, in_process->model.top1_correct);
  EXPECT_NEAR(scored->model.Perplexity(), in_process->model.Perplexity(), 1e-6 * in_process->model.Perplexity());

  WindowScorer broken = [](absl::Span<const int32_t>) -> absl::StatusOr<TokenScores> { return TokenScores{}; };
  EXPECT_TRUE(absl::IsInternal(EvaluateScorers(broken, nullptr, ids_, p).status()));
}

TEST_F(EvaluationTest, RejectsBadInput) {
  EvaluationProtocol p;
  p.context_length = 32;
  p.stride = 32;
  std::vector<int32_t> bad = ids_;
  bad[40] = config_.vocab_size();
  EXPECT_TRUE(absl::IsInvalidArgument(EvaluateModels(*model_, nullptr, bad, p).status()));
  p.max_tokens = -1;
  EXPECT_TRUE(absl::IsInvalidArgument(EvaluateModels(*model_, nullptr, ids_, p).status()));
  v1::ModelConfig small = config_;
  small.set_vocab_size(50);
  auto other = Load(small, SyntheticWeights(small, 1));
  ASSERT_NE(other, nullptr);
  p.max_tokens = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(EvaluateModels(*model_, other.get(), ids_, p).status()));
}

TEST(EvaluationProtocolTest, DescribesItself) {
  EvaluationProtocol p;
  EXPECT_EQ(p.Describe(300000), "context 2048, stride 2048 (disjoint windows), all 300000 tokens");
  p.context_length = 512;
  p.stride = 256;
  p.max_tokens = 8192;
  EXPECT_EQ(p.Describe(300000), "context 512, stride 256 (sliding windows), first 8192 of 300000 tokens");
}

}  // namespace
}  // namespace bitloom::engine
