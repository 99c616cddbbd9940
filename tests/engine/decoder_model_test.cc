// The CPU decoder on tiny random models of every flavour: against a naive double-precision forward,
// prefill vs decode, chunking, causality, GQA, tying, RoPE shift invariance and sliding windows.
#include "bitloom/engine/decoder_model.h"

#include <gtest/gtest.h>

#include <numeric>

#include "bitloom/formats/tensor_names.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

using testing::AllFlavours;
using testing::NaiveForward;
using testing::SyntheticConfig;
using testing::SyntheticWeights;

std::vector<int32_t> Iota(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<int32_t> Tokens(int n, int vocab, uint64_t seed = 7) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u + i * i * 17u) % vocab);
  return t;
}

std::unique_ptr<DecoderModel> LoadOrDie(const v1::ModelConfig& c, const WeightSource& w, ThreadPool* pool) {
  auto m = DecoderModel::Load(c, w, pool);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

std::vector<float> Prefill(const DecoderModel& m, const std::vector<int32_t>& tokens,
                           const std::vector<int32_t>& positions) {
  KvCache cache = m.NewKvCache(static_cast<int>(tokens.size()));
  auto logits = m.Forward(tokens, positions, cache, DecoderModel::Logits::kAll);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : std::vector<float>();
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

class FlavourTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    config_ = SyntheticConfig(GetParam());
    weights_ = SyntheticWeights(config_, 1234);
    model_ = LoadOrDie(config_, weights_, &pool_);
    ASSERT_NE(model_, nullptr);
  }
  ThreadPool pool_{2};
  v1::ModelConfig config_;
  InMemoryWeightSource weights_;
  std::unique_ptr<DecoderModel> model_;
};

TEST_P(FlavourTest, MatchesNaiveDoubleForward) {
  const auto tokens = Tokens(19, config_.vocab_size());
  const auto got = Prefill(*model_, tokens, Iota(19));
  const auto want = NaiveForward(config_, weights_, tokens);
  ASSERT_EQ(got.size(), want.size());
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_err = std::max(max_err, std::abs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  // fp32 vs double through a few layers of width 64-96: ~1e-6 relative per op.
  EXPECT_LT(max_err, 2e-5 * std::max(1.0, max_ref)) << GetParam() << " max |logit| " << max_ref;
}

TEST_P(FlavourTest, PrefillEqualsTokenByTokenDecode) {
  const int n = 23;  // longer than the sliding windows
  const auto tokens = Tokens(n, config_.vocab_size(), 3);
  const auto prefill = Prefill(*model_, tokens, Iota(n));
  KvCache cache = model_->NewKvCache(n);
  std::vector<float> decode;
  for (int t = 0; t < n; ++t) {
    const int32_t pos = t;
    auto logits = model_->Forward({&tokens[t], 1}, {&pos, 1}, cache, DecoderModel::Logits::kLast);
    ASSERT_TRUE(logits.ok()) << logits.status();
    decode.insert(decode.end(), logits->begin(), logits->end());
  }
  EXPECT_EQ(cache.length(), n);
  // Every kernel computes a row in a fixed order independent of the batch, so this is exact in practice;
  // the tolerance only leaves room for a future kernel that is not.
  EXPECT_LE(MaxAbsDiff(prefill, decode), 1e-5);
}

TEST_P(FlavourTest, ChunkedPrefillAndLastLogits) {
  const int n = 17;
  const auto tokens = Tokens(n, config_.vocab_size(), 5);
  const auto full = Prefill(*model_, tokens, Iota(n));
  KvCache cache = model_->NewKvCache(n);
  std::vector<float> chunked;
  for (int begin = 0; begin < n; begin += 5) {
    const int len = std::min(5, n - begin);
    std::vector<int32_t> chunk(tokens.begin() + begin, tokens.begin() + begin + len);
    auto logits = model_->Forward(chunk, Iota(len, begin), cache, DecoderModel::Logits::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    chunked.insert(chunked.end(), logits->begin(), logits->end());
  }
  EXPECT_LE(MaxAbsDiff(full, chunked), 1e-5);
  KvCache cache2 = model_->NewKvCache(n);
  auto last = model_->Forward(tokens, Iota(n), cache2, DecoderModel::Logits::kLast);
  ASSERT_TRUE(last.ok());
  EXPECT_LE(MaxAbsDiff(*last, std::vector<float>(full.end() - config_.vocab_size(), full.end())), 1e-6);
}

TEST_P(FlavourTest, LaterTokensDoNotChangeEarlierLogits) {
  const int n = 12, vocab = config_.vocab_size();
  auto a = Tokens(n, vocab, 9);
  auto b = a;
  b[8] = (b[8] + 1) % vocab;
  const auto la = Prefill(*model_, a, Iota(n));
  const auto lb = Prefill(*model_, b, Iota(n));
  EXPECT_EQ(std::vector<float>(la.begin(), la.begin() + 8 * vocab), std::vector<float>(lb.begin(), lb.begin() + 8 * vocab));
  EXPECT_GT(MaxAbsDiff(la, lb), 1e-4);  // and position 8 onwards does change
}

TEST_P(FlavourTest, ShiftingAllPositionsBarelyChangesLogits) {
  // RoPE is relative and every mask depends on position differences only, so adding a constant to every
  // position changes logits only through the rounding of larger angles. llama3 scaling is also relative.
  const int n = 10;
  const auto tokens = Tokens(n, config_.vocab_size(), 11);
  const auto base = Prefill(*model_, tokens, Iota(n));
  const auto shifted = Prefill(*model_, tokens, Iota(n, 100));
  EXPECT_LE(MaxAbsDiff(base, shifted), 2e-3);
}

TEST_P(FlavourTest, GqaEqualsMultiHeadWithReplicatedKv) {
  // Replicating each K/V head for its query group turns the GQA model into plain multi-head attention
  // with the same function: a check of the head-to-group mapping.
  const int groups = config_.num_attention_heads() / config_.num_key_value_heads();
  if (groups == 1) GTEST_SKIP() << "not a GQA flavour";
  v1::ModelConfig mha = config_;
  mha.set_num_key_value_heads(config_.num_attention_heads());
  InMemoryWeightSource w = weights_;
  const uint64_t hd = config_.head_dim(), hidden = config_.hidden_size();
  for (uint32_t l = 0; l < config_.num_layers(); ++l) {
    for (const char* proj : {"attn.k_proj.weight", "attn.v_proj.weight", "attn.k_proj.bias", "attn.v_proj.bias"}) {
      const std::string name = formats::LayerTensor(static_cast<int>(l), proj);
      if (!w.Contains(name)) continue;
      const WeightTensor t = *w.Read(name);
      const bool bias = t.shape.size() == 1;
      const uint64_t row = bias ? 1 : hidden;
      std::vector<float> expanded;
      for (uint32_t h = 0; h < config_.num_attention_heads(); ++h) {
        const uint64_t g = h / groups;
        expanded.insert(expanded.end(), t.data.begin() + g * hd * row, t.data.begin() + (g + 1) * hd * row);
      }
      std::vector<uint64_t> shape = t.shape;
      shape[0] = config_.num_attention_heads() * hd;
      ASSERT_TRUE(w.Add(name, shape, expanded).ok());
    }
  }
  auto mha_model = LoadOrDie(mha, w, &pool_);
  ASSERT_NE(mha_model, nullptr);
  const auto tokens = Tokens(9, config_.vocab_size(), 13);
  EXPECT_LE(MaxAbsDiff(Prefill(*model_, tokens, Iota(9)), Prefill(*mha_model, tokens, Iota(9))), 1e-5);
}

TEST_P(FlavourTest, TiedHeadEqualsExplicitCopy) {
  v1::ModelConfig c = config_;
  InMemoryWeightSource w = weights_;
  const auto tokens = Tokens(6, config_.vocab_size(), 17);
  if (c.tie_word_embeddings()) {
    const WeightTensor e = *w.Read(formats::kEmbedTokens);
    ASSERT_TRUE(w.Add(formats::kLmHead, e.shape, e.data).ok());
    c.set_tie_word_embeddings(false);
  } else {
    const WeightTensor e = *w.Read(formats::kEmbedTokens);
    ASSERT_TRUE(w.Add(formats::kLmHead, e.shape, e.data).ok());
    auto explicit_model = LoadOrDie(c, w, nullptr);
    w.Remove(formats::kLmHead);
    c.set_tie_word_embeddings(true);
    auto tied = LoadOrDie(c, w, nullptr);
    EXPECT_EQ(Prefill(*explicit_model, tokens, Iota(6)), Prefill(*tied, tokens, Iota(6)));
    return;
  }
  auto other = LoadOrDie(c, w, nullptr);
  EXPECT_EQ(Prefill(*model_, tokens, Iota(6)), Prefill(*other, tokens, Iota(6)));
}

INSTANTIATE_TEST_SUITE_P(Flavours, FlavourTest, ::testing::ValuesIn(AllFlavours()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(SlidingWindow, TokenOutsideWindowHasNoInfluenceOnLocalLayers) {
  for (const std::string flavour : {"mistral_sliding", "gemma3"}) {
    v1::ModelConfig c = SyntheticConfig(flavour);
    c.set_num_layers(1);
    c.set_sliding_window_pattern(0);  // the single layer is local
    const InMemoryWeightSource w = SyntheticWeights(c, 99);
    auto model = LoadOrDie(c, w, nullptr);
    ASSERT_NE(model, nullptr);
    const int window = static_cast<int>(c.sliding_window()), n = window + 3, vocab = c.vocab_size();
    auto a = Tokens(n, vocab, 21);
    auto b = a;
    b[0] = (b[0] + 1) % vocab;
    const auto la = Prefill(*model, a, Iota(n));
    const auto lb = Prefill(*model, b, Iota(n));
    for (int t = 0; t < n; ++t) {
      const std::vector<float> ra(la.begin() + t * vocab, la.begin() + (t + 1) * vocab);
      const std::vector<float> rb(lb.begin() + t * vocab, lb.begin() + (t + 1) * vocab);
      if (t >= window) {
        EXPECT_EQ(ra, rb) << flavour << ": position " << t << " saw token 0 through a window of " << window;
      } else {
        EXPECT_NE(ra, rb) << flavour << ": position " << t << " should see token 0";
      }
    }
  }
}

TEST(SlidingWindow, GemmaGlobalLayerSeesEverything) {
  v1::ModelConfig c = SyntheticConfig("gemma3");  // layers 0, 1 local (window 4), layer 2 global
  const InMemoryWeightSource w = SyntheticWeights(c, 5);
  auto model = LoadOrDie(c, w, nullptr);
  ASSERT_EQ(model->resolved().layer_is_sliding, (std::vector<bool>{true, true, false}));
  const int n = 16, vocab = c.vocab_size();
  auto a = Tokens(n, vocab, 23);
  auto b = a;
  b[0] = (b[0] + 1) % vocab;
  const auto la = Prefill(*model, a, Iota(n)), lb = Prefill(*model, b, Iota(n));
  EXPECT_NE(std::vector<float>(la.end() - vocab, la.end()), std::vector<float>(lb.end() - vocab, lb.end()));
}

TEST(DecoderModelErrors, LoadAndForwardErrorsNameTheProblem) {
  v1::ModelConfig c = SyntheticConfig("llama");
  InMemoryWeightSource w = SyntheticWeights(c, 1);

  v1::ModelConfig bad = c;
  bad.set_architecture("gpt2");
  auto s = DecoderModel::Load(bad, w, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("gpt2"), absl::string_view::npos) << s.status();

  bad = c;
  bad.set_num_key_value_heads(3);
  EXPECT_EQ(DecoderModel::Load(bad, w, nullptr).status().code(), absl::StatusCode::kInvalidArgument);

  InMemoryWeightSource missing = w;
  missing.Remove(formats::LayerTensor(1, "mlp.up_proj.weight"));
  s = DecoderModel::Load(c, missing, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("layers.1.mlp.up_proj.weight"), absl::string_view::npos) << s.status();

  InMemoryWeightSource wrong = w;
  ASSERT_TRUE(wrong.Add(formats::LayerTensor(0, "attn.q_proj.weight"), {64, 63}, std::vector<float>(64 * 63)).ok());
  s = DecoderModel::Load(c, wrong, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("[64, 63]"), absl::string_view::npos) << s.status();

  auto model = LoadOrDie(c, w, nullptr);
  KvCache cache = model->NewKvCache(4);
  const std::vector<int32_t> bad_id = {1, 101};
  auto f = model->Forward(bad_id, Iota(2), cache, DecoderModel::Logits::kAll);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("101"), absl::string_view::npos) << f.status();
  EXPECT_EQ(cache.length(), 0);
  ASSERT_TRUE(model->Forward(std::vector<int32_t>{1, 2, 3}, Iota(3), cache, DecoderModel::Logits::kNone).ok());
  f = model->Forward(std::vector<int32_t>{1, 2}, Iota(2, 3), cache, DecoderModel::Logits::kLast);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kResourceExhausted) << f.status();
  EXPECT_EQ(cache.length(), 3);
}

}  // namespace
}  // namespace bitloom::engine
