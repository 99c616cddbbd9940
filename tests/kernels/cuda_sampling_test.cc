// GPU vs CPU for next-token sampling: for the same logits, penalties, parameters and uniform
// variate, LaunchSampling must pick the token engine::Sampler::Sample picks (the CPU sampler seeded
// with the row's seed; u is its first draw, computed here the way Sample computes it). Covers
// greedy ties, multi-chunk argmax and top-k/top-p/min-p over vocabularies of 1000, 49152 and
// 262144, mixed greedy/sampled batches and tied logits. Skips when no GPU is present (CI).
#include "bitloom/kernels/cuda/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "bitloom/engine/generation_params.h"
#include "bitloom/engine/sampler.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

// The u that Sampler::Sample draws first for `seed`.
double FirstUniform(uint64_t seed) {
  std::mt19937_64 rng(seed);
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

SamplingRowParams ToRow(const engine::GenerationParams& g) {
  SamplingRowParams r;
  r.temperature = g.temperature;
  r.top_k = static_cast<int32_t>(g.top_k);
  r.top_p = g.top_p;
  r.min_p = g.min_p;
  r.repetition_penalty = g.repetition_penalty;
  r.presence_penalty = g.presence_penalty;
  r.frequency_penalty = g.frequency_penalty;
  return r;
}

struct Row {
  engine::GenerationParams params;
  std::vector<float> logits;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
};

// Runs one batch on the GPU and returns its tokens.
std::vector<int32_t> SampleOnGpu(const std::vector<Row>& rows, int64_t vocab, bool greedy_only) {
  const int batch = static_cast<int>(rows.size());
  const int64_t stride = vocab + 3;
  std::vector<float> logits(batch * stride, 0.0f);
  std::vector<int32_t> prompt_counts(batch * vocab, 0), output_counts(batch * vocab, 0);
  std::vector<SamplingRowParams> params(batch);
  std::vector<double> uniforms(batch);
  for (int b = 0; b < batch; ++b) {
    std::copy(rows[b].logits.begin(), rows[b].logits.end(), logits.begin() + b * stride);
    for (int32_t id : rows[b].prompt) ++prompt_counts[b * vocab + id];
    for (int32_t id : rows[b].output) ++output_counts[b * vocab + id];
    params[b] = ToRow(rows[b].params);
    uniforms[b] = FirstUniform(rows[b].params.seed);
  }
  absl::StatusOr<size_t> ws = SamplingWorkspaceBytes(batch, vocab);
  EXPECT_TRUE(ws.ok()) << ws.status();
  if (!ws.ok()) return {};
  DeviceBuffer d_logits(logits.size() * 4), d_pc(prompt_counts.size() * 4),
      d_oc(output_counts.size() * 4), d_params(batch * sizeof(SamplingRowParams)),
      d_u(batch * 8), d_tokens(batch * 4), d_ws(*ws);
  d_logits.Upload(logits);
  d_pc.Upload(prompt_counts);
  d_oc.Upload(output_counts);
  d_params.Upload(params);
  d_u.Upload(uniforms);
  SamplingParams p;
  p.logits = d_logits.as<float>();
  p.logits_stride = stride;
  p.rows = d_params.as<SamplingRowParams>();
  p.prompt_counts = d_pc.as<int32_t>();
  p.output_counts = d_oc.as<int32_t>();
  p.uniforms = greedy_only ? nullptr : d_u.as<double>();
  p.tokens = d_tokens.as<int32_t>();
  p.batch = batch;
  p.vocab = vocab;
  p.greedy_only = greedy_only;
  p.workspace = d_ws.as<void>();
  p.workspace_bytes = *ws;
  const absl::Status st = LaunchSampling(p, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return d_tokens.Download<int32_t>(batch);
}

int32_t SampleOnCpu(const Row& row) {
  engine::Sampler sampler(row.params);
  return sampler.Sample(row.logits, row.prompt, row.output);
}

// Logits with a realistic shape: a normal body, a handful of strong candidates, optionally rounded
// to a coarse grid so that many entries tie (the lower id must win every tie).
std::vector<float> MakeLogits(int64_t vocab, uint64_t seed, bool coarse) {
  std::vector<float> l = kernels::testing::RandomVector(vocab, seed, 2.5f);
  std::mt19937_64 rng(seed ^ 0xabcdef);
  for (int i = 0; i < 8; ++i) l[rng() % vocab] += 8.0f + static_cast<float>(i);
  if (coarse) {
    for (float& x : l) x = std::round(x * 2.0f) / 2.0f;
  }
  return l;
}

std::vector<int32_t> RandomIds(int64_t vocab, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

engine::GenerationParams Params(float temperature, uint32_t top_k, float top_p, float min_p,
                                float rep, float presence, float frequency, uint64_t seed) {
  engine::GenerationParams g;
  g.temperature = temperature;
  g.top_k = top_k;
  g.top_p = top_p;
  g.min_p = min_p;
  g.repetition_penalty = rep;
  g.presence_penalty = presence;
  g.frequency_penalty = frequency;
  g.seed = seed;
  return g;
}

void CheckBatch(const std::vector<Row>& rows, int64_t vocab, bool greedy_only) {
  const std::vector<int32_t> got = SampleOnGpu(rows, vocab, greedy_only);
  ASSERT_EQ(got.size(), rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    const engine::GenerationParams& g = rows[b].params;
    ASSERT_TRUE(g.Validate(static_cast<uint32_t>(vocab)).ok());
    EXPECT_EQ(got[b], SampleOnCpu(rows[b]))
        << "row " << b << " vocab=" << vocab << " T=" << g.temperature << " top_k=" << g.top_k
        << " top_p=" << g.top_p << " min_p=" << g.min_p << " rep=" << g.repetition_penalty
        << " presence=" << g.presence_penalty << " frequency=" << g.frequency_penalty
        << " seed=" << g.seed << " u=" << FirstUniform(g.seed);
  }
}

TEST(CudaSampling, MatchesCpuSampler) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // One batch per (vocab, trial): every row a different parameter set, with its own logits,
  // history and seed, so each trial draws a fresh u per row.
  for (int64_t vocab : {1000, 49152, 262144}) {
    const int trials = vocab > 100000 ? 6 : 12;
    for (int trial = 0; trial < trials; ++trial) {
      const uint64_t s = static_cast<uint64_t>(vocab) * 1000 + trial * 17 + 1;
      const std::vector<engine::GenerationParams> sets = {
          Params(0.0f, 0, 0.0f, 0.0f, 1.2f, 0.5f, 0.25f, s + 1),   // greedy after penalties
          Params(0.7f, 50, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, s + 2),   // top-k
          Params(1.0f, 0, 0.9f, 0.0f, 0.0f, 0.0f, 0.0f, s + 3),    // top-p alone: a wide nucleus
          Params(0.8f, 40, 0.95f, 0.05f, 0.0f, 0.0f, 0.0f, s + 4), // all three
          Params(1.3f, 0, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, s + 5),    // the full distribution
          Params(0.5f, 0, 0.0f, 0.1f, 1.3f, 0.5f, 0.3f, s + 6),    // min-p with every penalty
          Params(2.0f, 1000, 0.5f, 0.0f, 0.8f, -0.5f, 0.0f, s + 7),
          Params(0.9f, 1, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, s + 8),    // top_k = 1
      };
      std::vector<Row> rows;
      for (size_t i = 0; i < sets.size(); ++i) {
        Row r;
        r.params = sets[i];
        r.logits = MakeLogits(vocab, s * 31 + i, /*coarse=*/(trial + i) % 3 == 0);
        r.prompt = RandomIds(vocab, 40, s + 100 * i);
        r.output = RandomIds(vocab, 12, s + 100 * i + 1);
        r.output.push_back(r.output[0]);  // a repeated output token: frequency counts 2
        rows.push_back(std::move(r));
      }
      SCOPED_TRACE(::testing::Message() << "vocab=" << vocab << " trial=" << trial);
      CheckBatch(rows, vocab, /*greedy_only=*/false);
    }
  }
}

TEST(CudaSampling, GreedyTiesAndChunkBoundaries) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const int64_t vocab = 262144;
  std::vector<Row> rows(4);
  for (Row& r : rows) {
    r.logits = kernels::testing::RandomVector(vocab, 7);
    r.params = Params(0.0f, 0, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1);
  }
  rows[0].logits[200000] = 50.0f;  // a max in a late chunk, repeated in an earlier one
  rows[0].logits[70000] = 50.0f;
  rows[1].logits[vocab - 1] = 50.0f;  // the last entry
  rows[2].logits.assign(vocab, -INFINITY);  // all equal: id 0
  rows[3].logits[2047] = 50.0f;  // ties across the chunk boundary at 2048
  rows[3].logits[2048] = 50.0f;
  CheckBatch(rows, vocab, /*greedy_only=*/true);
  CheckBatch(rows, vocab, /*greedy_only=*/false);  // the same rows through the full path
}

TEST(CudaSampling, ManyDrawsFromOneDistribution) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // 64 rows with the same logits and different u: the draw's crossing lands all over the
  // renormalised distribution (early, late, inside long runs of tied entries).
  const int64_t vocab = 49152;
  const std::vector<float> logits = MakeLogits(vocab, 4242, /*coarse=*/true);
  std::vector<Row> rows(64);
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].logits = logits;
    rows[i].params = Params(1.5f, 0, i % 2 == 0 ? 0.98f : 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1000 + i);
  }
  CheckBatch(rows, vocab, /*greedy_only=*/false);
}

TEST(CudaSampling, RejectsBadParams) {
  EXPECT_EQ(SamplingWorkspaceBytes(0, 1000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingWorkspaceBytes(1, kMaxSamplingVocab + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  float f = 0.0f;
  int32_t i = 0;
  SamplingRowParams row;
  alignas(256) static char workspace[256];
  SamplingParams p;
  p.logits = &f;
  p.logits_stride = 1;
  p.rows = &row;
  p.tokens = &i;
  p.batch = 1;
  p.vocab = 1;
  p.workspace = workspace;
  p.workspace_bytes = sizeof(workspace);
  EXPECT_EQ(LaunchSampling(p, nullptr).code(), absl::StatusCode::kInvalidArgument);  // no uniforms
  p.greedy_only = true;
  p.logits_stride = 0;
  EXPECT_EQ(LaunchSampling(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.logits_stride = 1;
  p.workspace = workspace + 8;
  EXPECT_EQ(LaunchSampling(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitloom::kernels::cuda
