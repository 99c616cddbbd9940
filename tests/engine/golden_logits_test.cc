// The CPU engine against Hugging Face transformers on the same dequantized GGUF weights, both fp32.
// Reference data: tests/engine/golden/<model>.json, written by scripts/reference_logits.py.
//
// Tolerance. Both sides compute in fp32 from identical fp32 weights; they differ only in summation
// order (ours: fixed 8-lane dot products; PyTorch: BLAS blocking) and in transcendental functions. Each
// dot product of length K carries a relative error of order √K·2⁻²⁴ ≈ 1.5e-6 (K = 576..2048), and ~30
// layers of residual updates compound that to a relative 1e-5..1e-4 of the hidden state, i.e. a few
// 1e-4 absolute on logits whose magnitude is ~10-40. kTolerance leaves a margin of ~5x over that
// (1e-2 for Gemma 3, whose √hidden-scaled embeddings and 262k-row head make logits larger).
// A bug in any op (norm offset, RoPE base, window, scaling) moves logits by ≥ 0.1, far above these.
// Top-1 must agree at every position whose reference margin exceeds twice the tolerance; near-ties
// below that may flip legitimately and are only counted.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "bitloom/engine/sampler.h"
#include "bitloom/kernels/softmax.h"
#include "real_model.h"

namespace bitloom::engine {
namespace {

struct GoldenCase {
  std::string name;
  std::string gguf;
  double tolerance;
};

class GoldenLogits : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenLogits, MatchesTransformers) {
  const GoldenCase& c = GetParam();
  const std::string golden_path = std::string(BITLOOM_SOURCE_DIR) + "/tests/engine/golden/" + c.name + ".json";
  if (!std::filesystem::exists(golden_path)) {
    GTEST_SKIP() << golden_path << " is absent; generate it with scripts/reference_logits.py on a machine "
                 << "with torch + transformers";
  }
  ThreadPool pool(0);
  std::string skip, error;
  auto model = testing::LoadCachedModel(c.gguf, &pool, &skip, &error);
  if (model == nullptr && error.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(model, nullptr) << error;

  std::ifstream in(golden_path);
  const nlohmann::json g = nlohmann::json::parse(in);
  const std::vector<int32_t> ids = g["token_ids"].get<std::vector<int32_t>>();
  const int vocab = model->vocab_size();
  ASSERT_EQ(g["vocab_size"].get<int>(), vocab);
  const int n = static_cast<int>(ids.size());
  ASSERT_GE(n, 256);

  // Forward in chunks (a 262k vocabulary makes [n, vocab] large), keeping what the comparison needs.
  KvCache cache = model->NewKvCache(n);
  std::vector<std::vector<float>> sample_rows;
  const auto sample_positions = g["sample_positions"].get<std::vector<int>>();
  const auto sample_ids = g["sample_vocab_ids"].get<std::vector<int>>();
  double max_diff = 0, max_stat_diff = 0;
  int top1_agree = 0, near_ties = 0, hard_mismatches = 0;
  std::string first_mismatch;
  constexpr int kChunk = 32;
  for (int begin = 0; begin < n; begin += kChunk) {
    const int len = std::min(kChunk, n - begin);
    std::vector<int32_t> pos(len);
    std::iota(pos.begin(), pos.end(), begin);
    auto logits = model->Forward({ids.data() + begin, static_cast<size_t>(len)}, pos, cache,
                                 DecoderModel::Logits::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (int r = 0; r < len; ++r) {
      const int t = begin + r;
      const float* row = logits->data() + static_cast<size_t>(r) * vocab;
      const auto topk_ids = g["topk_ids"][t].get<std::vector<int>>();
      const auto topk_logits = g["topk_logits"][t].get<std::vector<double>>();
      for (size_t i = 0; i < topk_ids.size(); ++i) max_diff = std::max(max_diff, std::abs(row[topk_ids[i]] - topk_logits[i]));
      const int32_t top1 = ArgMax({row, static_cast<size_t>(vocab)});
      max_stat_diff = std::max(max_stat_diff, std::abs(row[top1] - g["max_logit"][t].get<double>()));
      max_stat_diff = std::max(max_stat_diff,
                               std::abs(kernels::LogSumExpF32(row, vocab) - g["logsumexp"][t].get<double>()));
      if (top1 == g["top1"][t].get<int32_t>()) {
        ++top1_agree;
      } else if (g["top1_margin"][t].get<double>() <= 2 * c.tolerance) {
        ++near_ties;
      } else if (hard_mismatches++ == 0) {
        first_mismatch = "position " + std::to_string(t) + ": ours " + std::to_string(top1) + ", reference " +
                         std::to_string(g["top1"][t].get<int32_t>());
      }
      for (size_t s = 0; s < sample_positions.size(); ++s) {
        if (sample_positions[s] != t) continue;
        const auto ref = g["sample_logits"][s].get<std::vector<double>>();
        for (size_t i = 0; i < sample_ids.size(); ++i) max_diff = std::max(max_diff, std::abs(row[sample_ids[i]] - ref[i]));
      }
    }
  }
  std::cout << c.name << ": " << n << " positions, top-1 agreement " << top1_agree << "/" << n << " (" << near_ties
            << " near-ties), max |logit diff| " << max_diff << ", max |max-logit or logsumexp diff| "
            << max_stat_diff << ", tolerance " << c.tolerance << "\n";
  EXPECT_EQ(hard_mismatches, 0) << first_mismatch;
  EXPECT_LT(max_diff, c.tolerance);
  EXPECT_LT(max_stat_diff, c.tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    FixtureModels, GoldenLogits,
    ::testing::Values(GoldenCase{"smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", 2e-3},
                      GoldenCase{"gemma-3-270m", "gemma-3-270m-q4_k_m.gguf", 1e-2}),
    [](const ::testing::TestParamInfo<GoldenCase>& i) {
      std::string s = i.param.name;
      for (char& ch : s) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

}  // namespace
}  // namespace bitloom::engine
