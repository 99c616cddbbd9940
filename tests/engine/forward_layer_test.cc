// The per-layer API of DecoderModel (EmbedTokens, ForwardLayer, HeadLogits), which the quantizer
// runs: it must be the same computation as Forward(), bit for bit, for every flavour.
#include <gtest/gtest.h>

#include <numeric>

#include "bitloom/engine/decoder_model.h"
#include "bitloom/formats/tensor_names.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

using testing::AllFlavours;
using testing::SyntheticConfig;
using testing::SyntheticWeights;

std::vector<int32_t> Tokens(int n, int vocab, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u + i * i * 17u) % vocab);
  return t;
}

std::vector<int32_t> Iota(int n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Logits of one sequence through Forward() on an empty cache.
std::vector<float> ForwardLogits(const DecoderModel& m, const std::vector<int32_t>& tokens) {
  KvCache cache = m.NewKvCache(static_cast<int>(tokens.size()));
  auto logits = m.Forward(tokens, Iota(static_cast<int>(tokens.size())), cache, DecoderModel::Logits::kAll);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : std::vector<float>();
}

class ForwardLayerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    config_ = SyntheticConfig(GetParam());
    weights_ = SyntheticWeights(config_, 99);
    auto m = DecoderModel::Load(config_, weights_, &pool_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  ThreadPool pool_{2};
  v1::ModelConfig config_;
  InMemoryWeightSource weights_;
  std::unique_ptr<DecoderModel> model_;
};

// Three sequences in one batch, through every layer, give each sequence's Forward() logits exactly.
TEST_P(ForwardLayerTest, ChainedLayersOnABatchEqualForwardPerSequence) {
  const DecoderModel& m = *model_;
  const int seqs = 3, len = 11;
  std::vector<int32_t> tokens, positions;
  for (int s = 0; s < seqs; ++s) {
    const std::vector<int32_t> t = Tokens(len, m.vocab_size(), 5 + s);
    tokens.insert(tokens.end(), t.begin(), t.end());
    const std::vector<int32_t> p = Iota(len);
    positions.insert(positions.end(), p.begin(), p.end());
  }
  auto hidden = m.EmbedTokens(tokens);
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  for (int layer = 0; layer < m.resolved().num_layers; ++layer) {
    ASSERT_TRUE(m.ForwardLayer(layer, absl::MakeSpan(*hidden), positions, seqs, {}, {}).ok());
  }
  auto logits = m.HeadLogits(*hidden);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = m.vocab_size();
  for (int s = 0; s < seqs; ++s) {
    const std::vector<int32_t> t(tokens.begin() + s * len, tokens.begin() + (s + 1) * len);
    const std::vector<float> want = ForwardLogits(m, t);
    const std::vector<float> got(logits->begin() + s * len * vocab, logits->begin() + (s + 1) * len * vocab);
    ASSERT_EQ(got, want) << "sequence " << s;
  }
}

// Substituting a perturbed o_proj equals loading a model with that weight; capture sees the four
// inputs in order with the right widths.
TEST_P(ForwardLayerTest, SubstitutedWeightsAndCapture) {
  const ResolvedConfig& c = model_->resolved();
  const int layer = c.num_layers - 1;
  const std::string name = formats::LayerTensor(layer, "attn.o_proj.weight");
  WeightTensor* o = weights_.Find(name);
  ASSERT_NE(o, nullptr);
  std::vector<float> perturbed = o->data;
  for (size_t i = 0; i < perturbed.size(); i += 3) perturbed[i] *= -0.5f;
  o->data = perturbed;
  auto changed = DecoderModel::Load(config_, weights_, &pool_);
  ASSERT_TRUE(changed.ok());

  const std::vector<int32_t> tokens = Tokens(9, c.vocab_size, 3);
  auto hidden = model_->EmbedTokens(tokens);
  ASSERT_TRUE(hidden.ok());
  std::vector<LinearInput> seen;
  std::vector<int64_t> dims;
  for (int l = 0; l < c.num_layers; ++l) {
    LayerLinearWeights w;
    if (l == layer) w.o_proj = perturbed;
    LinearInputCapture capture = [&](LinearInput input, absl::Span<const float> x, int64_t rows,
                                     int64_t dim) -> absl::Status {
      EXPECT_EQ(rows, 9);
      EXPECT_EQ(static_cast<int64_t>(x.size()), rows * dim);
      if (l == layer) {
        seen.push_back(input);
        dims.push_back(dim);
      }
      return absl::OkStatus();
    };
    ASSERT_TRUE(model_->ForwardLayer(l, absl::MakeSpan(*hidden), Iota(9), 1, w, capture).ok());
  }
  auto logits = model_->HeadLogits(*hidden);
  ASSERT_TRUE(logits.ok());
  EXPECT_EQ(*logits, ForwardLogits(**changed, tokens));
  EXPECT_NE(*logits, ForwardLogits(*model_, tokens));
  const std::vector<LinearInput> order = {LinearInput::kAttention, LinearInput::kAttentionOutput,
                                          LinearInput::kMlp, LinearInput::kMlpOutput};
  EXPECT_EQ(seen, order);
  const std::vector<int64_t> widths = {c.hidden_size, int64_t{c.num_heads} * c.head_dim, c.hidden_size,
                                       c.intermediate_size};
  EXPECT_EQ(dims, widths);
}

INSTANTIATE_TEST_SUITE_P(Flavours, ForwardLayerTest, ::testing::ValuesIn(AllFlavours()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST(ForwardLayerErrors, NameTheProblem) {
  const v1::ModelConfig config = SyntheticConfig("llama");
  InMemoryWeightSource weights = SyntheticWeights(config, 1);
  auto m = DecoderModel::Load(config, weights, nullptr);
  ASSERT_TRUE(m.ok());
  const DecoderModel& model = **m;
  const int64_t hidden = model.resolved().hidden_size;
  std::vector<float> x(4 * hidden, 0.5f);
  const std::vector<int32_t> pos = {0, 1, 0, 1};
  EXPECT_TRUE(absl::IsInvalidArgument(model.ForwardLayer(-1, absl::MakeSpan(x), pos, 2, {}, {})));
  EXPECT_TRUE(absl::IsInvalidArgument(model.ForwardLayer(model.resolved().num_layers, absl::MakeSpan(x), pos, 2, {}, {})));
  EXPECT_TRUE(absl::IsInvalidArgument(model.ForwardLayer(0, absl::MakeSpan(x), pos, 3, {}, {})));
  EXPECT_TRUE(absl::IsInvalidArgument(model.ForwardLayer(0, absl::MakeSpan(x).subspan(1), pos, 2, {}, {})));
  const std::vector<int32_t> negative = {0, -1, 0, 1};
  EXPECT_TRUE(absl::IsInvalidArgument(model.ForwardLayer(0, absl::MakeSpan(x), negative, 2, {}, {})));
  const std::vector<float> small(7, 1.0f);
  LayerLinearWeights w;
  w.up_proj = small;
  const absl::Status s = model.ForwardLayer(0, absl::MakeSpan(x), pos, 2, w, {});
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("layers.0.mlp.up_proj.weight"), std::string::npos) << s;
  const absl::Status cancelled = model.ForwardLayer(
      0, absl::MakeSpan(x), pos, 2, {},
      [](LinearInput, absl::Span<const float>, int64_t, int64_t) { return absl::CancelledError("stop"); });
  EXPECT_TRUE(absl::IsCancelled(cancelled));
  EXPECT_TRUE(absl::IsInvalidArgument(model.EmbedTokens({model.vocab_size()}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(model.HeadLogits(absl::MakeSpan(x).subspan(1)).status()));
}

}  // namespace
}  // namespace bitloom::engine
