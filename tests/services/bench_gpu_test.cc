// bitloom bench's GPU part (bench_gpu.h) on a SmolLM2-shaped synthetic artifact: every number of
// the report is there, positive and finite, and the decode speed is a sane fraction of the
// bandwidth limit. Skips without a CUDA device (CUDA builds only; label gpu).
#include "bench_gpu.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/modelstore/model_store.h"
#include "daemon_process.h"
#include "gtest/gtest.h"

namespace bitloom {
namespace {

bool PositiveFinite(const nlohmann::json& v) {
  return v.is_number() && std::isfinite(v.get<double>()) && v.get<double>() > 0;
}

TEST(BenchGpu, SyntheticSmolLm2Report) {
  if (absl::Status s = tools::CheckGpuBenchAvailable(); !s.ok()) GTEST_SKIP() << s.message();
  const std::string dir = ::bitloom::testing::MakeTempDir("bench_gpu");
  auto store = modelstore::ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto writer = (*store)->NewWriter("smol", false);
  ASSERT_TRUE(writer.ok());
  auto config = engine::SyntheticModelConfig("smollm2-135m");
  ASSERT_TRUE(config.ok());
  engine::SyntheticArtifactOptions synth;
  synth.bits_per_weight = 2.5;
  ASSERT_TRUE(engine::WriteSyntheticArtifact(*config, synth, **writer, nullptr).ok());
  auto reader = (*store)->OpenReader("smol");
  ASSERT_TRUE(reader.ok()) << reader.status();

  tools::GpuBenchOptions options;
  options.batches = {1, 3};
  options.prefill_lengths = {64, 300};
  options.decode_context = 40;
  options.warmup_steps = 2;
  options.steps = 5;
  options.prefill_repeats = 2;
  options.vram_fraction = 0.5;
  options.kernel_timeline_steps = 3;
  auto report = tools::RunGpuBench(**reader, options);
  ASSERT_TRUE(report.ok()) << report.status();
  const nlohmann::json& j = *report;
  EXPECT_TRUE(PositiveFinite(j["copy_bandwidth_gbps"])) << j.dump(2);
  EXPECT_TRUE(PositiveFinite(j["limit_tokens_per_s_batch1"]));
  EXPECT_TRUE(PositiveFinite(j["load_seconds"]));
  // Tied embeddings: the head is the whole embedding, so it dominates this model's bytes.
  EXPECT_GT(j["bytes_per_token"]["head"].get<double>(),
            j["bytes_per_token"]["decoder_linears"].get<double>());
  ASSERT_EQ(j["decode"].size(), 2u);
  for (const nlohmann::json& row : j["decode"]) {
    for (const char* loop : {"forward", "with_sampling"}) {
      ASSERT_TRUE(row[loop].contains("tokens_per_s")) << row.dump(2);
      EXPECT_TRUE(PositiveFinite(row[loop]["tokens_per_s"])) << row.dump(2);
      // Launch overheads dominate a 135M model, but it can never beat the bandwidth limit by much.
      EXPECT_LT(row[loop]["fraction_of_limit"].get<double>(), 1.5) << row.dump(2);
    }
    EXPECT_EQ(row["context_end"].get<int>(), 40 + 2 * (2 + 5) + 3);
    // The last of 3 recorded steps: every kernel of the layers, each with a GPU duration.
    const nlohmann::json& timeline = row["kernel_timeline"];
    EXPECT_EQ(timeline["steps_recorded"].get<int>(), 3) << timeline.dump(2);
    ASSERT_GE(timeline["kernels_per_step"].get<int>(), 5) << timeline.dump(2);
    ASSERT_EQ(timeline["kernels"].size(), timeline["kernels_per_step"].get<size_t>());
    double longest = 0;
    for (const nlohmann::json& k : timeline["kernels"]) {
      EXPECT_FALSE(k["name"].get<std::string>().empty());
      EXPECT_TRUE(PositiveFinite(k["duration_us"])) << k.dump();
      longest = std::max(longest, k["duration_us"].get<double>());
    }
    EXPECT_GE(timeline["step_span_us"].get<double>(), longest);
  }
  ASSERT_EQ(j["prefill"].size(), 2u);
  for (const nlohmann::json& row : j["prefill"]) {
    EXPECT_TRUE(PositiveFinite(row["tokens_per_s"])) << row.dump(2);
    EXPECT_TRUE(row["last_logits_finite"].get<bool>()) << row.dump(2);
    // RMS-preserving synthetic scales: logits of order one (the CPU engine's test sees the same).
    EXPECT_GT(row["last_logits_rms"].get<double>(), 0.05) << row.dump(2);
    EXPECT_LT(row["last_logits_rms"].get<double>(), 20.0) << row.dump(2);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace bitloom
