// OutputFisher (libs/quant/src/output_fisher.h), the currency in which the pipeline prices a
// tensor's quantization: the second-order KL divergence of the model's next-token distribution.
// Checked against the exact divergence, on directions the head cannot see, and in the pipeline on
// a toy whose last block writes only where the head does not read: priced by the relative change
// of the stream, that tensor's bits are wasted; priced through the head, they go where they count,
// and the artifact's real output divergence is lower at the same average width.
#include "output_fisher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bitloom/quant/quantization_pipeline.h"
#include "test_util.h"
#include "toy_artifact.h"
#include "toy_block_runner.h"

namespace bitloom::quant {
namespace {

using internal::OutputFisher;

// The CPU backend's product (QuantBackend::Matmul).
internal::MatmulFn Cpu(ThreadPool* pool) {
  return [pool](const kernels::MatmulF32Params& p) { return kernels::MatmulF32(p, pool); };
}
using testing::Gaussian;

constexpr int64_t kHidden = 32, kVocab = 40;

// Normalised rows (RMSNorm with `norm`, eps 1e-6) → logits → softmax, in double.
std::vector<double> Distribution(absl::Span<const float> h, const std::vector<float>& norm,
                                 const std::vector<float>& head, int64_t hidden, int64_t vocab) {
  double ms = 0.0;
  for (int64_t i = 0; i < hidden; ++i) ms += double(h[i]) * h[i];
  const double inv = 1.0 / std::sqrt(ms / hidden + 1e-6);
  std::vector<double> z(vocab);
  for (int64_t v = 0; v < vocab; ++v) {
    for (int64_t i = 0; i < hidden; ++i) z[v] += head[v * hidden + i] * (h[i] * inv * norm[i]);
  }
  const double mx = *std::max_element(z.begin(), z.end());
  double sum = 0.0;
  for (double& x : z) sum += (x = std::exp(x - mx));
  for (double& x : z) x /= sum;
  return z;
}

double Kl(const std::vector<double>& p, const std::vector<double>& q) {
  double kl = 0.0;
  for (size_t v = 0; v < p.size(); ++v) kl += p[v] * std::log(p[v] / q[v]);
  return kl;
}

struct Head {
  std::vector<float> norm = Gaussian(kHidden, 5, 0.3f);
  std::vector<float> head = Gaussian(kVocab * kHidden, 6, 1.5f);
  Head() {
    for (float& w : norm) w = 1.0f + w;
  }
  OutputLayer Layer() const { return {norm, 1e-6f, 0.0f, head, kVocab}; }
};

TEST(OutputFisher, MatchesTheExactDivergenceForSmallChanges) {
  const Head h;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> ref = Gaussian(kHidden, 100 + seed);
    std::vector<float> moved = Gaussian(kHidden, 200 + seed, 0.01f);
    for (int64_t i = 0; i < kHidden; ++i) moved[i] += ref[i];
    ThreadPool pool(2);
    auto f = OutputFisher::Build(h.Layer(), ref, kHidden, Cpu(&pool), &pool);
    ASSERT_TRUE(f.ok()) << f.status();
    auto d = f->MeanDivergence(ref, moved, 1, Cpu(&pool), &pool);
    ASSERT_TRUE(d.ok()) << d.status();
    const double exact = Kl(Distribution(ref, h.norm, h.head, kHidden, kVocab),
                            Distribution(moved, h.norm, h.head, kHidden, kVocab));
    EXPECT_GT(exact, 0.0);
    EXPECT_NEAR((*d)[0], exact, 0.03 * exact) << "seed " << seed;
  }
}

TEST(OutputFisher, AveragesOverTokensAndPricesEachRunApart) {
  const Head h;
  const int64_t tokens = 6;
  const std::vector<float> ref = Gaussian(tokens * kHidden, 11);
  std::vector<float> moved = Gaussian(3 * tokens * kHidden, 12, 0.02f);
  for (size_t i = 0; i < moved.size(); ++i) moved[i] += ref[i % ref.size()];
  ThreadPool pool(2);
  auto f = OutputFisher::Build(h.Layer(), ref, kHidden, Cpu(&pool), &pool);
  ASSERT_TRUE(f.ok()) << f.status();
  auto all = f->MeanDivergence(ref, moved, 3, Cpu(&pool), &pool);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  const size_t run = ref.size();
  for (int b = 0; b < 3; ++b) {
    auto one = f->MeanDivergence(ref, absl::MakeConstSpan(moved).subspan(b * run, run), 1,
                                 Cpu(&pool), &pool);
    ASSERT_TRUE(one.ok());
    EXPECT_DOUBLE_EQ((*one)[0], (*all)[b]);
    EXPECT_GT((*all)[b], 0.0);
  }
  // Nothing moved, nothing lost; a scaled stream is the same after the final norm.
  auto same = f->MeanDivergence(ref, ref, 1, Cpu(&pool), &pool);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ((*same)[0], 0.0);
  std::vector<float> scaled = ref;
  for (float& x : scaled) x *= 4.0f;
  auto scale = f->MeanDivergence(ref, scaled, 1, Cpu(&pool), &pool);
  ASSERT_TRUE(scale.ok());
  EXPECT_LT((*scale)[0], 1e-9);
}

TEST(OutputFisher, DirectionsTheHeadIgnoresCostNothing) {
  Head h;
  for (int64_t v = 0; v < kVocab; ++v) {
    for (int64_t i = kHidden / 2; i < kHidden; ++i) h.head[v * kHidden + i] = 0.0f;
  }
  const std::vector<float> ref = Gaussian(kHidden, 21);
  ThreadPool pool(2);
  auto f = OutputFisher::Build(h.Layer(), ref, kHidden, Cpu(&pool), &pool);
  ASSERT_TRUE(f.ok()) << f.status();
  // Swapping two unread coordinates keeps the row's norm, so the read half is unchanged.
  std::vector<float> hidden_move = ref;
  std::swap(hidden_move[kHidden - 1], hidden_move[kHidden - 2]);
  std::vector<float> seen_move = ref;
  std::swap(seen_move[0], seen_move[1]);
  auto unseen = f->MeanDivergence(ref, hidden_move, 1, Cpu(&pool), &pool);
  auto seen = f->MeanDivergence(ref, seen_move, 1, Cpu(&pool), &pool);
  ASSERT_TRUE(unseen.ok() && seen.ok());
  EXPECT_EQ((*unseen)[0], 0.0);
  EXPECT_GT((*seen)[0], 1e-4);
}

TEST(OutputFisher, RejectsShapesThatDoNotFit) {
  const Head h;
  ThreadPool pool(2);
  const std::vector<float> ref = Gaussian(kHidden, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(
      OutputFisher::Build(h.Layer(), ref, kHidden + 1, Cpu(&pool), &pool).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(OutputFisher::Build(h.Layer(), absl::MakeConstSpan(ref).subspan(1),
                                                  kHidden, Cpu(&pool), &pool)
                                  .status()));
  auto f = OutputFisher::Build(h.Layer(), ref, kHidden, Cpu(&pool), &pool);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(f->MeanDivergence(ref, ref, 2, Cpu(&pool), &pool).status()));
}

// A toy whose head reads only the first half of the stream and whose last block writes only into
// the second half, so that block's down projection matters to the output only through the final
// norm's scale. Without an output layer the pipeline cannot know.
constexpr int kLayers = 3;
constexpr int64_t kToyHidden = 64, kToyInner = 128, kToyVocab = 48, kSequences = 4, kSeqLen = 32;

class HalfReadHeadToyRunner : public testing::ToyBlockRunner {
 public:
  explicit HalfReadHeadToyRunner(bool expose_head)
      : ToyBlockRunner(kLayers, kToyHidden, kToyInner, kToyVocab), expose_head_(expose_head) {
    head_ = Gaussian(kToyVocab * kToyHidden, 77, 4.0f / std::sqrt(float(kToyHidden)));
    for (int64_t v = 0; v < kToyVocab; ++v) {
      for (int64_t i = kToyHidden / 2; i < kToyHidden; ++i) head_[v * kToyHidden + i] = 0.0f;
    }
    std::vector<float>& c = mutable_weights()[Name(kLayers - 1, "c")];  // [hidden, inner]
    std::fill(c.begin(), c.begin() + kToyHidden / 2 * kToyInner, 0.0f);
  }
  std::optional<OutputLayer> output_layer() const override {
    if (!expose_head_) return std::nullopt;
    return OutputLayer{norm_, 1e-6f, 0.0f, head_, kToyVocab};
  }
  const std::vector<float>& head() const { return head_; }
  const std::vector<float>& norm() const { return norm_; }

 private:
  bool expose_head_;
  std::vector<float> norm_ = std::vector<float>(kToyHidden, 1.0f);
  std::vector<float> head_;
};

// Mean over every token of the vocabulary of KL(fp ‖ quantized) of the next-token distribution.
double OutputDivergence(const HalfReadHeadToyRunner& runner, const WeightMap& quantized) {
  std::vector<int32_t> all(kToyVocab);
  for (int32_t t = 0; t < kToyVocab; ++t) all[t] = t;
  std::vector<float> ref = *runner.Embed(all), got = ref;
  WeightMap none;
  for (int l = 0; l < kLayers; ++l) {
    ref = *runner.RunBlockSubstituted(l, none, ref, 1, kToyVocab, {});
    got = *runner.RunBlock(l, quantized, got, 1, kToyVocab, {});
  }
  double total = 0.0;
  for (int64_t t = 0; t < kToyVocab; ++t) {
    const auto row = [&](const std::vector<float>& x) {
      return Distribution(absl::MakeConstSpan(x).subspan(t * kToyHidden, kToyHidden), runner.norm(),
                          runner.head(), kToyHidden, kToyVocab);
    };
    total += Kl(row(ref), row(got));
  }
  return total / kToyVocab;
}

TEST(OutputPricing, BitsGoWhereTheHeadReads) {
  PipelineOptions o;
  o.group_size = 32;
  o.tolerance = 0.05;
  o.seed = 3;
  o.target_bits_per_weight = 2.5;  // K + 16/32 stored bits: an average K of 2 over 9 equal tensors
  const std::string blind = testing::ToyBlockRunner::Name(kLayers - 1, "c");
  double kl[2] = {0.0, 0.0};
  int blind_bits[2] = {0, 0};
  for (int expose = 0; expose < 2; ++expose) {
    const HalfReadHeadToyRunner runner(expose == 1);
    auto art = testing::QuantizeToy(runner, o, kSequences, kSeqLen, kToyVocab);
    ASSERT_TRUE(art.ok()) << art.status();
    std::string widths;
    for (const v1::TensorEntry& e : art->entries) {
      widths += e.name() + "=" + std::to_string(static_cast<int>(e.bits_per_weight())) + " ";
      if (e.name() == blind) blind_bits[expose] = static_cast<int>(e.bits_per_weight());
    }
    kl[expose] = OutputDivergence(runner, art->weights);
    std::printf("%s: output KL %.4g (%s)\n", expose ? "priced through the head" : "relative change",
                kl[expose], widths.c_str());
  }
  EXPECT_EQ(blind_bits[1], 1) << "the tensor the head cannot see should get the fewest bits";
  EXPECT_GT(blind_bits[0], blind_bits[1]);
  EXPECT_LT(kl[1], kl[0]);
}

}  // namespace
}  // namespace bitloom::quant
