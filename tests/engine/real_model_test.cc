// SmolLM2-135M-Instruct through the CPU engine: finite logits, prefill == decode, sane greedy output.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "bitloom/engine/generate.h"
#include "real_model.h"

namespace bitloom::engine {
namespace {

TEST(SmolLM2, PrefillDecodeAgreeAndGreedyGenerationIsSane) {
  ThreadPool pool(0);
  std::string skip, error;
  auto model = testing::LoadCachedModel("SmolLM2-135M-Instruct.Q4_1.gguf", &pool, &skip, &error);
  if (model == nullptr && error.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(model, nullptr) << error;
  EXPECT_EQ(model->resolved().architecture, "llama");
  EXPECT_EQ(model->resolved().num_layers, 30);

  // "The capital of France is" in SmolLM2's tokenizer would be nicer, but tokenization is another
  // library's job; any in-vocabulary ids exercise the numerics.
  const std::vector<int32_t> prompt = {504, 3575, 282, 4649, 314, 2, 1116, 1148, 17, 638, 5418, 28};
  std::vector<int32_t> pos(prompt.size());
  std::iota(pos.begin(), pos.end(), 0);
  KvCache prefill_cache = model->NewKvCache(static_cast<int>(prompt.size()));
  auto prefill = model->Forward(prompt, pos, prefill_cache, DecoderModel::Logits::kAll);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  for (float v : *prefill) ASSERT_TRUE(std::isfinite(v));

  KvCache decode_cache = model->NewKvCache(static_cast<int>(prompt.size()));
  double max_diff = 0;
  const int vocab = model->vocab_size();
  for (size_t t = 0; t < prompt.size(); ++t) {
    const int32_t p = static_cast<int32_t>(t);
    auto logits = model->Forward({&prompt[t], 1}, {&p, 1}, decode_cache, DecoderModel::Logits::kLast);
    ASSERT_TRUE(logits.ok());
    for (int v = 0; v < vocab; ++v) {
      max_diff = std::max(max_diff, double(std::abs((*logits)[v] - (*prefill)[t * vocab + v])));
    }
  }
  EXPECT_LE(max_diff, 1e-4);

  GenerationParams params;
  params.max_new_tokens = 16;
  params.ignore_eos = true;
  auto result = Generate(*model, prompt, params, {});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->tokens.size(), 16u);
  std::set<int32_t> distinct;
  for (const auto& t : result->tokens) {
    ASSERT_GE(t.id, 0);
    ASSERT_LT(t.id, vocab);
    distinct.insert(t.id);
  }
  EXPECT_GT(distinct.size(), 1u) << "greedy output is one token repeated";
}

}  // namespace
}  // namespace bitloom::engine
