// GpuDecoderModel against the CPU DecoderModel on the same artifact. Synthetic models of every
// family (head_dim raised to 64, the smallest the paged attention runs) are written with their
// linear layers CODEC_HADAMARD_SCALAR at K = 2..8 (or fp16, the import's form), the embedding and
// an untied head fp16, norms and biases fp32; the CPU engine decodes the same artifact to fp32.
//
// Tolerance: the GPU rounds each linear layer's input to fp16 (rotated, for the GEMV; plain, for
// cuBLAS) and the GEMV decodes weights to fp16, ~5e-4 relative per step; over a few layers and the
// head that stays well below 1e-2 of the logits' scale, the bound asserted for every logit row
// (|gpu − cpu| ≤ 1e-2 · max(1, max|cpu|)). Top-1 must agree on ≥ 99% of the positions whose CPU
// margin between the two best tokens exceeds that bound (a closer race is a tie within the
// stated error). Decoding is teacher-forced with the CPU's argmax, so both engines see the same
// tokens for 64 steps after each prompt.
//
// Also: a batch of sequences of different lengths equals each run alone (1e-4: the same kernels,
// only cuBLAS may pick another algorithm for another batch), graphs on == off bit for bit, KV pages
// return to zero, exhaustion is RESOURCE_EXHAUSTED with nothing changed, the on-GPU sampler's
// greedy token is the logits' argmax, and the real SmolLM2 artifacts when present. The weight plan
// and the option checks are host code and run without a GPU; everything else skips without one.
#include "bitloom/engine/gpu_decoder_model.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bitloom/core/dtype.h"
#include "bitloom/engine/artifact_weight_source.h"
#include "bitloom/engine/device_pool_memory.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "gpu_model_weights.h"
#include "scratch_dir.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)"

// Scratch directories named after this test.
class ScratchDir : public testing::ScratchDir {
 public:
  ScratchDir() : testing::ScratchDir("gpu_decoder_test") {}
};

// The synthetic flavour with head_dim 64 (the synthetic configs use 16-32), or "smollm2_shape":
// random weights in SmolLM2-135M's real shapes (30 layers, 576 wide, 9/3 heads, vocab 49152), so
// the real rotation sizes (576 = Paley 36 × 16, 1536), GQA group 3 and a 49152-row head run; or
// "llama_pow2": power-of-two widths (512, 1024), where batch-1 steps take the rotating GEMVs.
v1::ModelConfig GpuConfig(const std::string& flavour) {
  if (flavour == "llama_pow2") {
    v1::ModelConfig c = testing::SyntheticConfig("llama");
    c.set_hidden_size(512);
    c.set_intermediate_size(1024);
    c.set_num_attention_heads(8);
    c.set_num_key_value_heads(2);
    c.set_head_dim(64);
    return c;
  }
  if (flavour == "smollm2_shape") {
    v1::ModelConfig c = testing::SyntheticConfig("smollm2_tied");
    c.set_vocab_size(49152);
    c.set_hidden_size(576);
    c.set_intermediate_size(1536);
    c.set_num_layers(30);
    c.set_num_attention_heads(9);
    c.set_num_key_value_heads(3);
    c.set_head_dim(64);
    c.set_rope_theta(100000.0f);
    c.set_max_position_embeddings(2048);
    return c;
  }
  v1::ModelConfig c = testing::SyntheticConfig(flavour);
  c.set_head_dim(64);
  return c;
}

const char* const kLinear[] = {"attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
                               "attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                               "mlp.down_proj.weight"};

bool IsLinear(const std::string& name) {
  for (const char* s : kLinear) {
    if (absl::EndsWith(name, s)) return true;
  }
  return false;
}

enum class LinearForm { kQuantized, kF16 };

// Writes `config`'s synthetic weights: linears (and the untied head) quantized with K cycling over
// 2..8 and group 32 (or, with `bits` > 0, all at `bits` and `group_size`; or with `bit_cycle`, K
// cycling over it in file order at `group_size`), or fp16; the embedding
// fp16 (or fp32 with embed_f32, which the GPU converts); everything 1-D fp32. Rotation seeds: one
// per (layer, input site), as the quantizer shares them.
void WriteModel(const std::string& path, const std::string& temp_dir, const v1::ModelConfig& config,
                LinearForm form, bool embed_f32 = false, int bits = 0, int group_size = 32,
                const std::vector<int>& bit_cycle = {}) {
  const InMemoryWeightSource weights = testing::SyntheticWeights(config, 11);
  auto writer = modelstore::ArtifactWriter::Create(path, temp_dir);
  ASSERT_TRUE(writer.ok()) << writer.status();
  static const int kBits[] = {2, 3, 4, 5, 6, 7, 8};
  int next_bits = 0;
  // (name, rotation seed): one seed per layer and input site (q/k/v, o, gate/up, down), as the
  // quantizer shares them, so the GPU rotates each site's input once.
  std::vector<std::pair<std::string, uint64_t>> names;
  for (const char* top : {formats::kEmbedTokens, formats::kFinalNorm, formats::kLmHead}) {
    if (weights.Contains(top)) names.emplace_back(top, 9999);
  }
  const char* const kOther[] = {"attn_norm.weight",      "mlp_norm.weight",    "post_attn_norm.weight",
                                "post_mlp_norm.weight",  "attn.q_norm.weight", "attn.k_norm.weight",
                                "attn.q_proj.bias",      "attn.k_proj.bias",   "attn.v_proj.bias",
                                "attn.o_proj.bias"};
  const int kSite[] = {0, 0, 0, 1, 2, 2, 3};  // per kLinear entry
  for (int l = 0; l < static_cast<int>(config.num_layers()); ++l) {
    for (const char* s : kOther) {
      if (weights.Contains(formats::LayerTensor(l, s))) names.emplace_back(formats::LayerTensor(l, s), 0);
    }
    for (int k = 0; k < 7; ++k) names.emplace_back(formats::LayerTensor(l, kLinear[k]), 100 * l + kSite[k]);
  }
  for (const auto& [name, seed] : names) {
    const WeightTensor t = *weights.Read(name);
    v1::TensorEntry e;
    e.set_name(name);
    for (uint64_t d : t.shape) e.add_shape(d);
    const bool linear = IsLinear(name) || name == formats::kLmHead;
    std::vector<uint8_t> blob;
    if (linear && form == LinearForm::kQuantized) {
      const int64_t rows = static_cast<int64_t>(t.shape[0]), cols = static_cast<int64_t>(t.shape[1]);
      auto rotation = kernels::HadamardRotation::Create(cols, seed);
      ASSERT_TRUE(rotation.ok()) << rotation.status();
      std::vector<float> rotated = t.data;
      rotation->Apply(rotated.data(), rows, nullptr);
      quant::ScalarQuantizerOptions options;
      options.bits = bits > 0              ? bits
                     : !bit_cycle.empty() ? bit_cycle[next_bits++ % bit_cycle.size()]
                                          : kBits[next_bits++ % 7];
      options.group_size = group_size;
      auto q = quant::QuantizeRtn(rotated, rows, cols, {}, options, nullptr);
      ASSERT_TRUE(q.ok()) << name << ": " << q.status();
      blob = std::move(q->blob);
      e.set_codec(v1::CODEC_HADAMARD_SCALAR);
      e.set_bits_per_weight(static_cast<float>(options.bits));
      e.set_group_size(group_size);
      (*e.mutable_params())[kernels::kScalarParamRotation] = rotation->Describe();
      (*e.mutable_params())[kernels::kScalarParamRotationSeed] = absl::StrCat(seed);
    } else if (t.shape.size() == 2 && !(embed_f32 && name == formats::kEmbedTokens)) {
      e.set_codec(v1::CODEC_F16);
      e.set_bits_per_weight(16);
      blob.resize(t.data.size() * 2);
      for (size_t k = 0; k < t.data.size(); ++k) {
        const uint16_t h = F32ToF16(t.data[k]);
        std::memcpy(blob.data() + 2 * k, &h, 2);
      }
    } else {
      e.set_codec(v1::CODEC_F32);
      e.set_bits_per_weight(32);
      blob.resize(t.data.size() * 4);
      std::memcpy(blob.data(), t.data.data(), blob.size());
    }
    ASSERT_TRUE((*writer)->AddTensor(e, blob).ok()) << name;
  }
  v1::ArtifactManifest manifest;
  *manifest.mutable_config() = config;
  manifest.set_quantizer_version("gpu_decoder_model_test");
  ASSERT_TRUE((*writer)->Finish(manifest).ok());
}

std::unique_ptr<modelstore::ArtifactReader> Open(const std::string& path) {
  auto reader = modelstore::ArtifactReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  return reader.ok() ? std::move(*reader) : nullptr;
}

std::unique_ptr<VramPool> DevicePool(uint64_t bytes) {
  auto memory = AllocateDevicePoolMemory({.bytes = bytes});
  EXPECT_TRUE(memory.ok()) << memory.status();
  if (!memory.ok()) return nullptr;
  return std::make_unique<VramPool>(std::move(*memory));
}

GpuModelOptions SmallOptions() {
  GpuModelOptions o;
  o.model_id = "synthetic";
  o.max_batch = 8;
  o.max_seq_len = 256;
  o.kv_pages = 64;
  o.page_size = 16;
  o.prefill_chunk = 16;  // prompts of 40 tokens take three chunks
  return o;
}

std::vector<int32_t> Prompt(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return ids;
}

// max|got − want| / max(1, max|want|): the tests' relative difference of two logit rows.
double RelativeDifference(absl::Span<const float> got, absl::Span<const float> want) {
  double diff = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return diff / scale;
}

// SmallOptions() under another model id (two models of one test share a pool).
GpuModelOptions SmallOptionsNamed(const std::string& model_id) {
  GpuModelOptions o = SmallOptions();
  o.model_id = model_id;
  return o;
}

// The two models of an A/B test with CUDA graphs on or off: the defaults named `a`, and the same
// named `b` with `change` applied to them (the feature under test turned off).
std::pair<GpuModelOptions, GpuModelOptions> OptionsAB(const std::string& a, const std::string& b, bool graphs,
                                                      void (*change)(GpuModelOptions&)) {
  GpuModelOptions first = SmallOptionsNamed(absl::StrCat(a, graphs));
  first.use_cuda_graphs = graphs;
  GpuModelOptions second = first;
  second.model_id = absl::StrCat(b, graphs);
  change(second);
  return {first, second};
}

// Accumulates the row comparison of GPU and CPU logits.
struct Agreement {
  double tolerance = 1e-2;
  double worst = 0;  // max over rows of max|gpu − cpu| / max(1, max|cpu|)
  int rows = 0, decided = 0, agreed = 0;

  void Add(absl::Span<const float> gpu, absl::Span<const float> cpu) {
    ASSERT_EQ(gpu.size(), cpu.size());
    worst = std::max(worst, RelativeDifference(gpu, cpu));
    double scale = 1;
    for (float v : cpu) scale = std::max(scale, std::abs(double(v)));
    ++rows;
    std::vector<float> sorted(cpu.begin(), cpu.end());
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] > tolerance * scale) {
      ++decided;
      agreed += ArgMax(gpu) == ArgMax(cpu);
    }
  }
  void Expect(const std::string& what) const {
    std::cout << what << ": " << rows << " rows, worst relative error " << worst << ", top-1 " << agreed << "/"
              << decided << " decided positions\n";
    EXPECT_LE(worst, tolerance) << what;
    EXPECT_GE(agreed, 0.99 * decided) << what;
  }
};

// Prompts of several lengths, each prefilled and then decoded for `steps` tokens (the CPU's argmax
// fed to both), on GPU and CPU.
void CompareWithCpu(const DecoderModel& cpu, GpuDecoderModel& gpu, const std::vector<int>& prompt_lengths,
                    int steps, Agreement* agreement) {
  const int vocab = cpu.vocab_size();
  for (int len : prompt_lengths) {
    SCOPED_TRACE(absl::StrCat("prompt of ", len));
    const std::vector<int32_t> prompt = Prompt(len, vocab, 5 + len);
    KvCache cache = cpu.NewKvCache(len + steps);
    std::vector<int32_t> positions(len);
    for (int i = 0; i < len; ++i) positions[i] = i;
    auto cpu_logits = cpu.Forward(prompt, positions, cache, DecoderModel::Logits::kLast);
    ASSERT_TRUE(cpu_logits.ok()) << cpu_logits.status();
    auto seq = gpu.AddSequence();
    ASSERT_TRUE(seq.ok()) << seq.status();
    auto gpu_logits = gpu.Prefill(*seq, prompt);
    ASSERT_TRUE(gpu_logits.ok()) << gpu_logits.status();
    agreement->Add(*gpu_logits, *cpu_logits);
    for (int s = 0; s < steps; ++s) {
      const int32_t next = ArgMax(*cpu_logits);
      const int32_t pos = len + s;
      cpu_logits = cpu.Forward({&next, 1}, {&pos, 1}, cache, DecoderModel::Logits::kLast);
      ASSERT_TRUE(cpu_logits.ok()) << cpu_logits.status();
      const SequenceId id = *seq;
      gpu_logits = gpu.DecodeStep({&id, 1}, {&next, 1});
      ASSERT_TRUE(gpu_logits.ok()) << gpu_logits.status();
      agreement->Add(*gpu_logits, *cpu_logits);
    }
    EXPECT_EQ(gpu.Length(*seq), len + steps);
    ASSERT_TRUE(gpu.Release(*seq).ok());
  }
  EXPECT_EQ(gpu.kv_cache().pages_used(), 0);
}

// ---- Host-side checks (no GPU needed).

TEST(GpuWeightPlan, FormsOffsetsAndConversions) {
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("qwen2");  // biases, untied head
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized, /*embed_f32=*/true);
  auto reader = Open(dir.Join("m.bitloom"));
  ASSERT_NE(reader, nullptr);
  auto cfg = ResolveConfig(config);
  ASSERT_TRUE(cfg.ok());
  auto plan = gpu::GpuWeightPlan::Build(*reader, config, *cfg);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const gpu::PlannedTensor* embed = plan->Find(formats::kEmbedTokens);
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->form, gpu::DeviceForm::kF16);
  EXPECT_FALSE(embed->verbatim);  // stored fp32, converted
  EXPECT_EQ(embed->bytes, uint64_t(config.vocab_size()) * config.hidden_size() * 2);
  const gpu::PlannedTensor* bias = plan->Find(formats::LayerTensor(0, "attn.q_proj.bias"));
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->form, gpu::DeviceForm::kF32);
  EXPECT_TRUE(bias->verbatim);
  const gpu::PlannedTensor* q = plan->Find(formats::LayerTensor(1, "attn.q_proj.weight"));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->form, gpu::DeviceForm::kQuantized);
  EXPECT_EQ(plan->Find(formats::kLmHead)->form, gpu::DeviceForm::kQuantized);
  EXPECT_FALSE(plan->has_dense_linear());
  EXPECT_EQ(plan->max_rotated_stride(), 256);  // o_proj reads heads · 64
  // Every tensor 256-byte aligned, inside the region, not overlapping another.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const gpu::PlannedTensor& t : plan->tensors()) {
    EXPECT_EQ(t.offset % 256, 0u) << t.name;
    EXPECT_LE(t.offset + t.bytes, plan->region_bytes()) << t.name;
    spans.emplace_back(t.offset, t.offset + t.bytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first);
}

TEST(GpuWeightPlan, DenseLinearsAndErrors) {
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("smollm2_tied");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kF16);
  auto reader = Open(dir.Join("m.bitloom"));
  ASSERT_NE(reader, nullptr);
  auto cfg = ResolveConfig(config);
  auto plan = gpu::GpuWeightPlan::Build(*reader, config, *cfg);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->has_dense_linear());
  EXPECT_EQ(plan->max_dense_cols(), 256);  // o_proj reads heads · 64
  EXPECT_EQ(plan->Find(formats::kLmHead), nullptr);  // tied: the embedding is the head
  EXPECT_TRUE(plan->Find(formats::LayerTensor(0, "mlp.up_proj.weight"))->verbatim);

  // A config whose shapes the artifact does not hold names the tensor.
  v1::ModelConfig wider = config;
  wider.set_intermediate_size(128);
  auto wider_cfg = ResolveConfig(wider);
  auto bad = gpu::GpuWeightPlan::Build(*reader, wider, *wider_cfg);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_NE(bad.status().message().find("gate_proj"), std::string::npos) << bad.status();
}

TEST(GpuWeightPlan, EmbeddingInHostLeavesTheRegion) {
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("qwen2");  // untied head
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  ASSERT_NE(reader, nullptr);
  auto cfg = ResolveConfig(config);
  ASSERT_TRUE(cfg.ok());
  auto device = gpu::GpuWeightPlan::Build(*reader, config, *cfg);
  auto host = gpu::GpuWeightPlan::Build(*reader, config, *cfg, /*embedding_in_host=*/true);
  ASSERT_TRUE(device.ok()) << device.status();
  ASSERT_TRUE(host.ok()) << host.status();
  const uint64_t embed_bytes = uint64_t(config.vocab_size()) * config.hidden_size() * 2;
  EXPECT_TRUE(host->Find(formats::kEmbedTokens)->in_host);
  EXPECT_FALSE(device->Find(formats::kEmbedTokens)->in_host);
  // The region shrinks by the embedding (up to the 256-byte alignment of its slot).
  EXPECT_LE(host->region_bytes() + embed_bytes, device->region_bytes());
  EXPECT_GE(host->region_bytes() + embed_bytes + 256, device->region_bytes());
  for (const gpu::PlannedTensor& t : host->tensors()) {
    if (!t.in_host) {
      EXPECT_LE(t.offset + t.bytes, host->region_bytes()) << t.name;
    }
  }

  // A tied head reads the whole table every step: refused, naming the option.
  const v1::ModelConfig tied = GpuConfig("smollm2_tied");
  WriteModel(dir.Join("tied.bitloom"), dir.path(), tied, LinearForm::kQuantized);
  auto tied_reader = Open(dir.Join("tied.bitloom"));
  auto tied_cfg = ResolveConfig(tied);
  auto refused = gpu::GpuWeightPlan::Build(*tied_reader, tied, *tied_cfg, /*embedding_in_host=*/true);
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("embedding_in_host"), std::string::npos) << refused.status();
}

TEST(GpuDecoderModelLoad, RefusesWhatItDoesNotRun) {
  ScratchDir dir;
  auto host = AllocateHostPoolMemory(1 << 20);
  ASSERT_TRUE(host.ok());
  VramPool pool(std::move(*host));
  {
    v1::ModelConfig config = GpuConfig("llama");
    config.set_architecture("phi3");
    WriteModel(dir.Join("phi.bitloom"), dir.path(), config, LinearForm::kF16);
    auto reader = Open(dir.Join("phi.bitloom"));
    auto model = GpuDecoderModel::Load(*reader, &pool, SmallOptions());
    EXPECT_TRUE(absl::IsUnimplemented(model.status())) << model.status();
    EXPECT_NE(model.status().message().find("phi3"), std::string::npos);
  }
  {
    v1::ModelConfig config = testing::SyntheticConfig("llama");  // head_dim 16
    WriteModel(dir.Join("hd16.bitloom"), dir.path(), config, LinearForm::kF16);
    auto reader = Open(dir.Join("hd16.bitloom"));
    auto model = GpuDecoderModel::Load(*reader, &pool, SmallOptions());
    EXPECT_TRUE(absl::IsUnimplemented(model.status())) << model.status();
    EXPECT_NE(model.status().message().find("head_dim 16"), std::string::npos);
  }
  WriteModel(dir.Join("ok.bitloom"), dir.path(), GpuConfig("llama"), LinearForm::kF16);
  auto reader = Open(dir.Join("ok.bitloom"));
  GpuModelOptions o = SmallOptions();
  o.max_batch = 65;
  EXPECT_TRUE(absl::IsInvalidArgument(GpuDecoderModel::Load(*reader, &pool, o).status()));
  o = SmallOptions();
  o.prefill_chunk = 12;
  EXPECT_TRUE(absl::IsInvalidArgument(GpuDecoderModel::Load(*reader, &pool, o).status()));
  o = SmallOptions();
  o.kv_bytes = 1 << 20;  // and kv_pages: both set
  EXPECT_TRUE(absl::IsInvalidArgument(GpuDecoderModel::Load(*reader, &pool, o).status()));
  // A host pool is not a device pool.
  EXPECT_TRUE(absl::IsFailedPrecondition(GpuDecoderModel::Load(*reader, &pool, SmallOptions()).status()));
  EXPECT_EQ(pool.Usage().free, pool.capacity());
}

// ---- GPU.

struct FlavourCase {
  std::string flavour;
  LinearForm form;
};

class GpuMatchesCpu : public ::testing::TestWithParam<FlavourCase> {};

TEST_P(GpuMatchesCpu, PrefillAndDecodeLogits) {
  SKIP_WITHOUT_GPU();
  const FlavourCase& c = GetParam();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig(c.flavour);
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, c.form);
  auto reader = Open(dir.Join("m.bitloom"));
  ASSERT_NE(reader, nullptr);
  ArtifactWeightSource source(*reader);
  auto cpu = DecoderModel::Load(config, source, nullptr);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // The SmolLM2-shaped fp16 flavour alone needs 269 MB of weights.
  auto pool = DevicePool(uint64_t{512} << 20);
  ASSERT_NE(pool, nullptr);
  auto gpu = GpuDecoderModel::Load(*reader, pool.get(), SmallOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  Agreement agreement;
  CompareWithCpu(**cpu, **gpu, {1, 13, 40}, 64, &agreement);
  agreement.Expect(absl::StrCat(c.flavour, c.form == LinearForm::kQuantized ? " quantized" : " fp16"));
}

INSTANTIATE_TEST_SUITE_P(
    Flavours, GpuMatchesCpu,
    ::testing::Values(FlavourCase{"llama", LinearForm::kQuantized}, FlavourCase{"llama", LinearForm::kF16},
                      FlavourCase{"llama3_scaled", LinearForm::kQuantized},
                      FlavourCase{"smollm2_tied", LinearForm::kQuantized},
                      FlavourCase{"smollm2_tied", LinearForm::kF16},
                      FlavourCase{"mistral_sliding", LinearForm::kQuantized},
                      FlavourCase{"qwen2", LinearForm::kQuantized}, FlavourCase{"qwen3", LinearForm::kQuantized},
                      FlavourCase{"gemma3", LinearForm::kQuantized}, FlavourCase{"gemma3", LinearForm::kF16},
                      FlavourCase{"smollm2_shape", LinearForm::kQuantized},
                      FlavourCase{"llama_pow2", LinearForm::kQuantized},
                      FlavourCase{"smollm2_shape", LinearForm::kF16}),
    [](const ::testing::TestParamInfo<FlavourCase>& param_info) {
      return param_info.param.flavour + (param_info.param.form == LinearForm::kQuantized ? "_quantized" : "_fp16");
    });

// Prefill chunks of 24+ tokens run the quantized linears as dequantized slices times cuBLAS (the
// 64-token chunks here, also sliced smaller than a layer by a tiny prefill_gemm_bytes), shorter
// chunks as GEMVs (the 13-token tail): both against the CPU engine, on the real SmolLM2 widths too.
TEST(GpuDecoderModel, PrefillGemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const std::string flavour : {"llama", "smollm2_shape"}) {
    for (const uint64_t gemm_bytes : {uint64_t{64} << 20, uint64_t{64} << 10}) {
      SCOPED_TRACE(absl::StrCat(flavour, ", prefill_gemm_bytes ", gemm_bytes));
      ScratchDir dir;
      const v1::ModelConfig config = GpuConfig(flavour);
      WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
      auto reader = Open(dir.Join("m.bitloom"));
      ArtifactWeightSource source(*reader);
      auto cpu = DecoderModel::Load(config, source, nullptr);
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto pool = DevicePool(uint64_t{512} << 20);
      GpuModelOptions o = SmallOptions();
      o.prefill_chunk = 64;
      o.prefill_gemm_bytes = gemm_bytes;
      auto gpu = GpuDecoderModel::Load(*reader, pool.get(), o);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      Agreement agreement;
      CompareWithCpu(**cpu, **gpu, {40, 64 + 13}, 4, &agreement);
      agreement.Expect(absl::StrCat(flavour, " prefill GEMM"));
    }
  }
}

// A decode bucket of 32 runs its linears as dequantize + GEMM inside the captured graph: each of 20
// sequences decoded together gets the logits it gets alone (GEMV path, bucket 1).
TEST(GpuDecoderModel, LargeBucketGemmEqualsEachSequenceAlone) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("llama");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{512} << 20);
  GpuModelOptions o = SmallOptions();
  o.max_batch = 32;
  o.kv_pages = 128;
  auto gpu = GpuDecoderModel::Load(*reader, pool.get(), o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GpuDecoderModel& m = **gpu;
  const int n = 20;
  std::vector<SequenceId> ids(n);
  std::vector<int32_t> next(n);
  std::vector<std::vector<float>> alone(n);
  for (int s = 0; s < n; ++s) {
    ids[s] = *m.AddSequence();
    auto logits = m.Prefill(ids[s], Prompt(3 + s, m.vocab_size(), 70 + s));
    ASSERT_TRUE(logits.ok()) << logits.status();
    next[s] = ArgMax(*logits);
  }
  // Alone: a throwaway sequence per prompt, so the batched ones stay at their prefill length.
  for (int s = 0; s < n; ++s) {
    const SequenceId solo = *m.AddSequence();
    ASSERT_TRUE(m.Prefill(solo, Prompt(3 + s, m.vocab_size(), 70 + s)).ok());
    auto logits = m.DecodeStep({&solo, 1}, {&next[s], 1});
    ASSERT_TRUE(logits.ok()) << logits.status();
    alone[s] = *logits;
    ASSERT_TRUE(m.Release(solo).ok());
  }
  auto batched = m.DecodeStep(ids, next);
  ASSERT_TRUE(batched.ok()) << batched.status();
  double worst = 0;
  for (int s = 0; s < n; ++s) {
    const absl::Span<const float> row = absl::MakeConstSpan(*batched).subspan(s * m.vocab_size(), m.vocab_size());
    worst = std::max(worst, RelativeDifference(row, alone[s]));
    EXPECT_EQ(ArgMax(row), ArgMax(alone[s])) << "sequence " << s;
  }
  std::cout << "bucket 32 (GEMM) vs alone (GEMV): worst relative difference " << worst << "\n";
  EXPECT_LE(worst, 1e-2);
  EXPECT_GT(worst, 0.0) << "the two paths round differently; equal logits mean the GEMM path did not run";
  for (SequenceId id : ids) ASSERT_TRUE(m.Release(id).ok());
}

// The embedding in pinned host memory gives the same logits bit for bit, and leaves the pool.
TEST(GpuDecoderModel, EmbeddingInHostMatchesDevice) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("qwen2");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized, /*embed_f32=*/true);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{512} << 20);
  const GpuModelOptions on_device = SmallOptionsNamed("device");
  GpuModelOptions in_host = SmallOptionsNamed("host");
  in_host.embedding_in_host = true;
  auto a = GpuDecoderModel::Load(*reader, pool.get(), on_device);
  auto b = GpuDecoderModel::Load(*reader, pool.get(), in_host);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const uint64_t embed_bytes = uint64_t(config.vocab_size()) * config.hidden_size() * 2;
  EXPECT_EQ((*a)->host_bytes(), 0u);
  EXPECT_EQ((*b)->host_bytes(), embed_bytes);
  EXPECT_LE((*b)->weights_bytes() + embed_bytes, (*a)->weights_bytes());
  const std::vector<int32_t> prompt = Prompt(21, config.vocab_size(), 3);
  const SequenceId sa = *(*a)->AddSequence(), sb = *(*b)->AddSequence();
  auto la = (*a)->Prefill(sa, prompt);
  auto lb = (*b)->Prefill(sb, prompt);
  ASSERT_TRUE(la.ok() && lb.ok());
  ASSERT_EQ(*la, *lb);
  for (int t = 0; t < 5; ++t) {
    const int32_t next = ArgMax(*la);
    la = (*a)->DecodeStep({&sa, 1}, {&next, 1});
    lb = (*b)->DecodeStep({&sb, 1}, {&next, 1});
    ASSERT_TRUE(la.ok() && lb.ok());
    ASSERT_EQ(*la, *lb) << "step " << t;
  }
}

// Logits of `steps` decode steps of each sequence, fed `tokens[seq][step]`.
using StepLogits = std::vector<std::vector<std::vector<float>>>;  // [seq][step][vocab]

TEST(GpuDecoderModel, BatchEqualsEachSequenceAlone) {
  SKIP_WITHOUT_GPU();
  for (const std::string flavour : {"llama", "gemma3"}) {
    SCOPED_TRACE(flavour);
    ScratchDir dir;
    const v1::ModelConfig config = GpuConfig(flavour);
    WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
    auto reader = Open(dir.Join("m.bitloom"));
    auto pool = DevicePool(uint64_t{256} << 20);
    auto gpu = GpuDecoderModel::Load(*reader, pool.get(), SmallOptions());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    GpuDecoderModel& m = **gpu;
    const std::vector<int> lengths = {3, 17, 33, 5, 1, 16};
    const int steps = 12;
    const int n = static_cast<int>(lengths.size());
    std::vector<std::vector<int32_t>> tokens(n);
    StepLogits alone(n);
    for (int s = 0; s < n; ++s) {
      auto seq = m.AddSequence();
      ASSERT_TRUE(seq.ok());
      auto logits = m.Prefill(*seq, Prompt(lengths[s], m.vocab_size(), 40 + s));
      ASSERT_TRUE(logits.ok()) << logits.status();
      alone[s].push_back(*logits);
      for (int t = 0; t < steps; ++t) {
        const int32_t next = ArgMax(*logits);
        tokens[s].push_back(next);
        const SequenceId id = *seq;
        logits = m.DecodeStep({&id, 1}, {&next, 1});
        ASSERT_TRUE(logits.ok()) << logits.status();
        alone[s].push_back(*logits);
      }
      ASSERT_TRUE(m.Release(*seq).ok());
    }
    std::vector<SequenceId> ids(n);
    for (int s = 0; s < n; ++s) {
      ids[s] = *m.AddSequence();
      auto logits = m.Prefill(ids[s], Prompt(lengths[s], m.vocab_size(), 40 + s));
      ASSERT_TRUE(logits.ok());
      EXPECT_EQ(*logits, alone[s][0]) << "prefill of sequence " << s;
    }
    double worst = 0;
    for (int t = 0; t < steps; ++t) {
      std::vector<int32_t> step_tokens(n);
      for (int s = 0; s < n; ++s) step_tokens[s] = tokens[s][t];
      auto logits = m.DecodeStep(ids, step_tokens);
      ASSERT_TRUE(logits.ok()) << logits.status();
      for (int s = 0; s < n; ++s) {
        const std::vector<float>& ref = alone[s][t + 1];
        worst = std::max(worst,
                         RelativeDifference(absl::MakeConstSpan(*logits).subspan(s * m.vocab_size(), m.vocab_size()), ref));
        EXPECT_EQ(ArgMax(absl::MakeConstSpan(*logits).subspan(s * m.vocab_size(), m.vocab_size())), ArgMax(ref))
            << "sequence " << s << " step " << t;
      }
    }
    std::cout << flavour << ": batched vs alone, worst relative difference " << worst << "\n";
    // Not bit for bit: one sequence's attention splits are 32 tokens and a batch's 64
    // (PlanDecodeAttention), so softmax sums run in another order (H200: 1.7e-4 for llama).
    EXPECT_LE(worst, 3e-4);
    for (SequenceId id : ids) ASSERT_TRUE(m.Release(id).ok());
    EXPECT_EQ(m.kv_cache().pages_used(), 0);
  }
}

TEST(GpuDecoderModel, GraphsMatchDirectLaunchesBitForBit) {
  SKIP_WITHOUT_GPU();
  for (const LinearForm form : {LinearForm::kQuantized, LinearForm::kF16}) {
    ScratchDir dir;
    const v1::ModelConfig config = GpuConfig("gemma3");
    WriteModel(dir.Join("m.bitloom"), dir.path(), config, form);
    auto reader = Open(dir.Join("m.bitloom"));
    auto pool = DevicePool(uint64_t{512} << 20);
    const GpuModelOptions with = SmallOptionsNamed("graphs");
    GpuModelOptions without = SmallOptionsNamed("direct");
    without.use_cuda_graphs = false;
    auto a = GpuDecoderModel::Load(*reader, pool.get(), with);
    auto b = GpuDecoderModel::Load(*reader, pool.get(), without);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    // Batches 1, 3 and 6 (buckets 1, 4, 8) over sequences of different lengths.
    for (int batch : {1, 3, 6}) {
      SCOPED_TRACE(absl::StrCat("batch ", batch));
      std::vector<SequenceId> ia, ib;
      std::vector<int32_t> next(batch);
      for (int s = 0; s < batch; ++s) {
        const std::vector<int32_t> prompt = Prompt(2 + 7 * s, config.vocab_size(), s);
        ia.push_back(*(*a)->AddSequence());
        ib.push_back(*(*b)->AddSequence());
        auto la = (*a)->Prefill(ia.back(), prompt);
        auto lb = (*b)->Prefill(ib.back(), prompt);
        ASSERT_TRUE(la.ok() && lb.ok());
        ASSERT_EQ(*la, *lb);
        next[s] = ArgMax(*la);
      }
      for (int t = 0; t < 20; ++t) {
        auto la = (*a)->DecodeStep(ia, next);
        auto lb = (*b)->DecodeStep(ib, next);
        ASSERT_TRUE(la.ok()) << la.status();
        ASSERT_TRUE(lb.ok()) << lb.status();
        ASSERT_EQ(la->size(), lb->size());
        ASSERT_EQ(std::memcmp(la->data(), lb->data(), la->size() * sizeof(float)), 0) << "step " << t;
        for (int s = 0; s < batch; ++s) {
          next[s] = ArgMax(absl::MakeConstSpan(*la).subspan(s * config.vocab_size(), config.vocab_size()));
        }
      }
      for (int s = 0; s < batch; ++s) {
        ASSERT_TRUE((*a)->Release(ia[s]).ok());
        ASSERT_TRUE((*b)->Release(ib[s]).ok());
      }
    }
  }
}

// Batch-1 steps on power-of-two widths: the GEMVs that rotate their own input (q/k/v and gate/up
// with the residual norm, writing the residual to the other buffer; o_proj plain) against the
// rotation kernels, over enough steps and layers that a residual left in the wrong buffer shows.
// They differ at most by the last bit of 1/rms, hence a tolerance far below the CPU comparison's.
// Loads the model twice (options a and b), prefills `prompt` into both (equal logits: prefill rows
// take neither batch-1 path) and decodes `steps` greedy tokens, expecting each step's logits within
// `tolerance` (relative, default 1e-4) of each other. before_step(true / false) runs before a's / b's step.
// same_prefill = false: the two may also differ in prefill, within `tolerance`.
void ExpectSameDecode(const modelstore::ArtifactReader& reader, VramPool* pool,
                      const GpuModelOptions& options_a, const GpuModelOptions& options_b,
                      const std::vector<int32_t>& prompt, int steps,
                      const std::function<void(bool)>& before_step = [](bool) {}, double tolerance = 1e-4,
                      bool same_prefill = true) {
  auto a = GpuDecoderModel::Load(reader, pool, options_a);
  auto b = GpuDecoderModel::Load(reader, pool, options_b);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const SequenceId sa = *(*a)->AddSequence(), sb = *(*b)->AddSequence();
  auto la = (*a)->Prefill(sa, prompt);
  auto lb = (*b)->Prefill(sb, prompt);
  ASSERT_TRUE(la.ok() && lb.ok());
  if (same_prefill) {
    ASSERT_EQ(*la, *lb) << "prefill (several rows) takes neither batch-1 path";
  } else {
    EXPECT_LE(RelativeDifference(*la, *lb), tolerance) << "prefill";
  }
  int32_t next = ArgMax(*la);
  for (int t = 0; t < steps; ++t) {
    before_step(true);
    auto da = (*a)->DecodeStep({sa}, {next});
    before_step(false);
    auto db = (*b)->DecodeStep({sb}, {next});
    ASSERT_TRUE(da.ok()) << da.status();
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_LE(RelativeDifference(*da, *db), tolerance) << "step " << t;
    next = ArgMax(*da);
  }
  ASSERT_TRUE((*a)->Release(sa).ok());
  ASSERT_TRUE((*b)->Release(sb).ok());
}

// ExpectSameDecode for a batch: one sequence per prompt in each model, then `steps` decode steps of
// the whole batch on the same tokens (each row's next token is model a's argmax); the logits agree
// within `tolerance` (0: bit for bit).
void ExpectSameBatchDecode(const modelstore::ArtifactReader& reader, VramPool* pool, const GpuModelOptions& options_a,
                           const GpuModelOptions& options_b, const std::vector<std::vector<int32_t>>& prompts,
                           int steps, double tolerance) {
  auto a = GpuDecoderModel::Load(reader, pool, options_a);
  auto b = GpuDecoderModel::Load(reader, pool, options_b);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<SequenceId> sa, sb;
  std::vector<int32_t> tokens;
  for (const std::vector<int32_t>& prompt : prompts) {
    sa.push_back(*(*a)->AddSequence());
    sb.push_back(*(*b)->AddSequence());
    auto la = (*a)->Prefill(sa.back(), prompt);
    ASSERT_TRUE(la.ok() && (*b)->Prefill(sb.back(), prompt).ok());
    tokens.push_back(ArgMax(*la));
  }
  const int64_t vocab = (*a)->vocab_size();
  for (int step = 0; step < steps; ++step) {
    auto da = (*a)->DecodeStep(sa, tokens);
    auto db = (*b)->DecodeStep(sb, tokens);
    ASSERT_TRUE(da.ok() && db.ok());
    if (tolerance == 0.0) {
      ASSERT_EQ(*da, *db) << "step " << step;
    } else {
      EXPECT_LE(RelativeDifference(*da, *db), tolerance) << "step " << step;
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto row = da->begin() + static_cast<int64_t>(i) * vocab;
      tokens[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }
}

// fuse_attention_combine (the default): at decode batches from 4 the o_proj rotation merges the
// attention splits itself; batch-4 steps equal those with the combine kernel bit for bit (prompts
// of 30-45 tokens, so the 256-token bound's splits of 32 hold data in one to three of them), with
// graphs on and off; Gemma 3's flavour adds head_dim 256, sliding windows and sandwich norms.
TEST(GpuDecoderModel, AttentionMergedByTheRotationMatchesTheCombineKernel) {
  SKIP_WITHOUT_GPU();
  auto pool = DevicePool(uint64_t{256} << 20);
  for (const char* flavour : {"llama_pow2", "gemma3"}) {
    SCOPED_TRACE(flavour);
    ScratchDir dir;
    v1::ModelConfig config = GpuConfig(flavour);
    config.set_num_layers(2);
    WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
    auto reader = Open(dir.Join("m.bitloom"));
    for (const bool graphs : {true, false}) {
      SCOPED_TRACE(absl::StrCat("graphs ", graphs));
      const auto [merged, combined] =
          OptionsAB("merged", "combined", graphs, [](GpuModelOptions& o) { o.fuse_attention_combine = false; });
      std::vector<std::vector<int32_t>> prompts;
      for (int i = 0; i < 4; ++i) prompts.push_back(Prompt(30 + 5 * i, config.vocab_size(), 40 + i));
      ExpectSameBatchDecode(*reader, pool.get(), merged, combined, prompts, 24, 0.0);
    }
  }
}

TEST(GpuDecoderModel, RotatingGemvMatchesRotationKernels) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  v1::ModelConfig config = GpuConfig("llama_pow2");
  config.set_num_layers(3);  // an odd count: the final norm reads whichever buffer holds the residual
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{256} << 20);
  GpuModelOptions rotating = SmallOptionsNamed("rotating");
  GpuModelOptions kernels = SmallOptionsNamed("kernels");
  kernels.rotating_gemv = false;
  for (const bool graphs : {true, false}) {
    SCOPED_TRACE(absl::StrCat("graphs ", graphs));
    rotating.use_cuda_graphs = kernels.use_cuda_graphs = graphs;
    rotating.model_id = absl::StrCat("rotating", graphs);
    kernels.model_id = absl::StrCat("kernels", graphs);
    ExpectSameDecode(*reader, pool.get(), rotating, kernels, Prompt(9, config.vocab_size(), 5),
                     24);
  }
}

// The streamed GEMV pipeline (sm_90, opt-in through SetStreamedGemv) decodes what the register
// pipeline decodes: its batch-1 q/k/v and o_proj groups (K >= 3) stream, rotating or not, with
// graphs on and off; the mixed bit widths and group size 32 of WriteModel's layers included.
TEST(GpuDecoderModel, StreamedGemvMatchesRegisterGemv) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  v1::ModelConfig config = GpuConfig("llama_pow2");
  config.set_num_layers(3);
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{256} << 20);
  const bool was_streamed = kernels::cuda::StreamedGemvEnabled();
  for (const bool graphs : {true, false}) {
    for (const bool rotating : {true, false}) {
      SCOPED_TRACE(absl::StrCat("graphs ", graphs, " rotating ", rotating));
      GpuModelOptions o = SmallOptionsNamed(absl::StrCat("streamed", graphs, rotating));
      o.use_cuda_graphs = graphs;
      o.rotating_gemv = rotating;
      GpuModelOptions r = o;
      r.model_id = absl::StrCat("registers", graphs, rotating);
      // a's steps (and the graph a captures) stream; b's use registers.
      ExpectSameDecode(*reader, pool.get(), o, r, Prompt(9, config.vocab_size(), 7), 16,
                       [](bool first) { kernels::cuda::SetStreamedGemv(first); });
    }
  }
  kernels::cuda::SetStreamedGemv(was_streamed);
}

// The tiled layout (tiled_gemv, the default): a model whose linears are all 2-, 3-, 8- or 4-bit with group
// 128 on whole tiles gets every one rewritten at load and decodes as the artifact layout does (batch-1
// steps with graphs on and off, and a batch-3 step), within the GEMV tolerance; prefill reads the
// tiled weights through the dequantization. A model of mixed K and group 32 is left as it is; one
// alternating K = 2 and 3 is tiled whole, its q/k/v and gate/up launches reading both K.
TEST(GpuDecoderModel, TiledGemvMatchesArtifactLayout) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  v1::ModelConfig config = GpuConfig("llama_pow2");
  config.set_num_layers(2);
  config.set_vocab_size(512);
  auto pool = DevicePool(uint64_t{256} << 20);
  for (const int bits : {2, 3, 8, 4}) {  // the 4-bit model stays for the batch-3 check below
    SCOPED_TRACE(absl::StrCat("K ", bits));
    const std::string path = dir.Join(absl::StrCat("m", bits, ".bitloom"));
    WriteModel(path, dir.path(), config, LinearForm::kQuantized, false, bits, 128);
    auto reader = Open(path);
    for (const bool graphs : {true, false}) {
      SCOPED_TRACE(absl::StrCat("graphs ", graphs));
      GpuModelOptions tiled = SmallOptionsNamed(absl::StrCat("tiled", bits, graphs));
      tiled.use_cuda_graphs = graphs;
      GpuModelOptions plain = tiled;
      plain.model_id = absl::StrCat("plain", bits, graphs);
      plain.tiled_gemv = false;
      {
        auto m = GpuDecoderModel::Load(*reader, pool.get(), tiled);
        ASSERT_TRUE(m.ok()) << m.status();
        // Every linear: 2 layers of q/k/v/o/gate/up/down plus the head.
        const uint64_t per_layer = uint64_t{512 * 512 * 2 + 128 * 512 * 2 + 1024 * 512 * 3} * bits / 8;
        EXPECT_EQ((*m)->tiled_bytes(), 2 * per_layer + uint64_t{512 * 512} * bits / 8);
      }
      // The artifact layout's kernel rounds each weight to fp16, the tiled one scales in fp32: both
      // are within the GEMV's 3e-3 of the fp32 reference, so the logits agree to about that.
      ExpectSameDecode(*reader, pool.get(), tiled, plain, Prompt(9, config.vocab_size(), 11), 12,
                       [](bool) {}, 1e-2, /*same_prefill=*/false);
    }
  }
  auto reader = Open(dir.Join("m4.bitloom"));
  // Batch 3 (ExpectSameDecode runs batch 1).
  GpuModelOptions plain = SmallOptionsNamed("plain_b3");
  plain.tiled_gemv = false;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 3; ++i) prompts.push_back(Prompt(5 + i, config.vocab_size(), 20 + i));
  ExpectSameBatchDecode(*reader, pool.get(), SmallOptionsNamed("tiled_b3"), plain, prompts, 2, 1e-2);

  ScratchDir mixed_dir;
  WriteModel(mixed_dir.Join("m.bitloom"), mixed_dir.path(), config, LinearForm::kQuantized);
  auto mixed_reader = Open(mixed_dir.Join("m.bitloom"));
  auto mixed = GpuDecoderModel::Load(*mixed_reader, pool.get(), SmallOptionsNamed("mixed"));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ((*mixed)->tiled_bytes(), 0u);

  // K alternating 2, 3 in file order (the head first, then q/k/v/o/gate/up/down per layer: q/k/v and
  // gate/up each mix the two): every group is tiled, q/k/v and gate/up launched with both K.
  WriteModel(mixed_dir.Join("m23.bitloom"), mixed_dir.path(), config, LinearForm::kQuantized, false, 0, 128, {2, 3});
  auto reader23 = Open(mixed_dir.Join("m23.bitloom"));
  GpuModelOptions tiled23 = SmallOptionsNamed("tiled23");
  GpuModelOptions plain23 = SmallOptionsNamed("plain23");
  plain23.tiled_gemv = false;
  {
    auto m = GpuDecoderModel::Load(*reader23, pool.get(), tiled23);
    ASSERT_TRUE(m.ok()) << m.status();
    // The head 2; layer 0: q 3, k 2, v 3, o 2, gate 3, up 2, down 3; layer 1 the other way round.
    const uint64_t layer0 = (uint64_t{512 * 512} * 3 + uint64_t{128 * 512} * 2 + uint64_t{128 * 512} * 3 +
                             uint64_t{512 * 512} * 2 + uint64_t{1024 * 512} * (3 + 2 + 3)) / 8;
    const uint64_t layer1 = (uint64_t{512 * 512} * 2 + uint64_t{128 * 512} * 3 + uint64_t{128 * 512} * 2 +
                             uint64_t{512 * 512} * 3 + uint64_t{1024 * 512} * (2 + 3 + 2)) / 8;
    EXPECT_EQ((*m)->tiled_bytes(), layer0 + layer1 + uint64_t{512 * 512} * 2 / 8);
  }
  ExpectSameDecode(*reader23, pool.get(), tiled23, plain23, Prompt(9, config.vocab_size(), 13), 12, [](bool) {},
                   1e-2, /*same_prefill=*/false);
}

// offset_terms (the default): batch-1 launches whose layers are all tiled at K = 2 take their input's
// offset terms from its rotation instead of the activation-sum mma. A 2-bit model decodes as with the
// mma, batch 1 with graphs on and off (every group takes the terms) and batch 3 (none does), to the
// fp32 rounding of the terms' other summation order.
TEST(GpuDecoderModel, OffsetTermsFromTheRotationMatchTheMma) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  v1::ModelConfig config = GpuConfig("llama_pow2");
  config.set_num_layers(2);
  config.set_vocab_size(512);
  WriteModel(dir.Join("m2.bitloom"), dir.path(), config, LinearForm::kQuantized, false, 2, 128);
  auto reader = Open(dir.Join("m2.bitloom"));
  auto pool = DevicePool(uint64_t{256} << 20);
  for (const bool graphs : {true, false}) {
    SCOPED_TRACE(absl::StrCat("graphs ", graphs));
    const auto [terms, mma] = OptionsAB("terms", "mma", graphs, [](GpuModelOptions& o) { o.offset_terms = false; });
    ExpectSameDecode(*reader, pool.get(), terms, mma, Prompt(9, config.vocab_size(), 17), 12, [](bool) {}, 1e-3,
                     /*same_prefill=*/false);
  }
  GpuModelOptions mma = SmallOptionsNamed("mma_b3");
  mma.offset_terms = false;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 3; ++i) prompts.push_back(Prompt(6 + i, config.vocab_size(), 30 + i));
  ExpectSameBatchDecode(*reader, pool.get(), SmallOptionsNamed("terms_b3"), mma, prompts, 2, 1e-3);
}

TEST(GpuDecoderModel, KvPagesExhaustionAndErrors) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("llama");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{128} << 20);
  GpuModelOptions o = SmallOptions();
  o.kv_pages = 6;  // 96 tokens
  {
    auto gpu = GpuDecoderModel::Load(*reader, pool.get(), o);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    GpuDecoderModel& m = **gpu;
    const SequenceId a = *m.AddSequence();
    const SequenceId b = *m.AddSequence();
    ASSERT_TRUE(m.Prefill(a, Prompt(40, m.vocab_size(), 1)).ok());  // 3 pages
    auto too_long = m.Prefill(b, Prompt(60, m.vocab_size(), 2));   // 4 more: 3 free
    EXPECT_TRUE(absl::IsResourceExhausted(too_long.status())) << too_long.status();
    EXPECT_EQ(m.Length(b), 0);
    EXPECT_EQ(m.kv_cache().pages_used(), 3);
    ASSERT_TRUE(m.Prefill(b, Prompt(48, m.vocab_size(), 2)).ok());  // exactly the 3 free pages
    EXPECT_EQ(m.kv_cache().pages_free(), 0);
    EXPECT_TRUE(absl::IsResourceExhausted(m.AddSequence().status()));
    // a grows to 48 tokens in its pages, then needs a fourth.
    int32_t token = 3;
    for (int t = 40; t < 48; ++t) ASSERT_TRUE(m.DecodeStep({&a, 1}, {&token, 1}).ok()) << t;
    const SequenceId both[] = {b, a};
    const int32_t two[] = {3, 4};
    auto full = m.DecodeStep(both, two);
    EXPECT_TRUE(absl::IsResourceExhausted(full.status())) << full.status();
    EXPECT_EQ(m.Length(a), 48);
    EXPECT_EQ(m.Length(b), 48);  // neither grew
    // Input errors.
    const int32_t bad_token = config.vocab_size();
    EXPECT_TRUE(absl::IsInvalidArgument(m.DecodeStep({&a, 1}, {&bad_token, 1}).status()));
    const SequenceId twice[] = {a, a};
    EXPECT_TRUE(absl::IsInvalidArgument(m.DecodeStep(twice, two).status()));
    const SequenceId unknown = 999;
    EXPECT_TRUE(absl::IsNotFound(m.DecodeStep({&unknown, 1}, {&token, 1}).status()));
    EXPECT_TRUE(absl::IsNotFound(m.Prefill(unknown, {token}).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(m.Prefill(a, {}).status()));
    ASSERT_TRUE(m.Release(a).ok());
    ASSERT_TRUE(m.Release(b).ok());
    EXPECT_TRUE(absl::IsNotFound(m.Release(a)));
    EXPECT_EQ(m.kv_cache().pages_used(), 0);
    EXPECT_EQ(m.kv_cache().num_sequences(), 0);
    EXPECT_GT(m.weights_bytes(), 0u);
    EXPECT_GT(m.workspace_bytes(), 0u);
  }
  // Unloading returns every region.
  EXPECT_EQ(pool->Usage().free, pool->capacity());
  // A pool too small for the workspace: RESOURCE_EXHAUSTED and nothing kept.
  auto tiny = DevicePool(uint64_t{1} << 20);
  o.kv_pages = 1024;
  auto refused = GpuDecoderModel::Load(*reader, tiny.get(), o);
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(tiny->Usage().free, tiny->capacity());
}

TEST(GpuDecoderModel, OnGpuSamplingGreedyIsTheArgmax) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("smollm2_tied");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{128} << 20);
  auto gpu = GpuDecoderModel::Load(*reader, pool.get(), SmallOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GpuDecoderModel& m = **gpu;
  const std::vector<int32_t> prompt = Prompt(21, m.vocab_size(), 8);
  const SequenceId a = *m.AddSequence(), b = *m.AddSequence();
  auto la = m.Prefill(a, prompt);
  auto lb = m.Prefill(b, prompt);
  ASSERT_TRUE(la.ok() && lb.ok());
  int32_t ta = ArgMax(*la), tb = ArgMax(*lb);
  const kernels::cuda::SamplingRowParams greedy;
  for (int t = 0; t < 16; ++t) {
    auto logits = m.DecodeStep({&a, 1}, {&ta, 1});
    ASSERT_TRUE(logits.ok());
    auto sampled = m.DecodeAndSample({&b, 1}, {&tb, 1}, {&greedy, 1}, {});
    ASSERT_TRUE(sampled.ok()) << sampled.status();
    ta = ArgMax(*logits);
    tb = (*sampled)[0];
    EXPECT_EQ(tb, ta) << "step " << t;
  }
  kernels::cuda::SamplingRowParams hot;
  hot.temperature = 0.8f;
  hot.top_k = 20;
  const double u = 0.37;
  auto drawn = m.DecodeAndSample({&b, 1}, {&tb, 1}, {&hot, 1}, {&u, 1});
  ASSERT_TRUE(drawn.ok()) << drawn.status();
  EXPECT_GE((*drawn)[0], 0);
  EXPECT_LT((*drawn)[0], m.vocab_size());
  // Without token counts (SmallOptions: token_count_sequences = 0) a penalty cannot be sampled here.
  kernels::cuda::SamplingRowParams penalised;
  penalised.repetition_penalty = 1.2f;
  EXPECT_TRUE(absl::IsFailedPrecondition(m.DecodeAndSample({&b, 1}, {&tb, 1}, {&penalised, 1}, {}).status()));
  EXPECT_FALSE(m.HasTokenCounts(b));
}

// On-GPU sampling with the device's token counts gives the host Sampler's tokens: two reference
// sequences decoded with DecodeStep() and sampled by Sampler::Sample, two twins (same prompt, same
// seeds) decoded and sampled by DecodeAndSample() with uniforms from Sampler::DrawUniform(). One pair
// is penalised, the other not (its count row is not gathered). The count rows are reused across the
// parameter sets, so a new sequence's counts must start at zero.
TEST(GpuDecoderModel, OnGpuSamplingWithPenaltiesMatchesTheHostSampler) {
  SKIP_WITHOUT_GPU();
  ScratchDir dir;
  const v1::ModelConfig config = GpuConfig("smollm2_tied");
  WriteModel(dir.Join("m.bitloom"), dir.path(), config, LinearForm::kQuantized);
  auto reader = Open(dir.Join("m.bitloom"));
  auto pool = DevicePool(uint64_t{128} << 20);
  GpuModelOptions o = SmallOptions();
  o.token_count_sequences = 4;
  auto gpu = GpuDecoderModel::Load(*reader, pool.get(), o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  GpuDecoderModel& m = **gpu;
  // Repeated ids, so the prompt counts are above one.
  std::vector<int32_t> prompt = Prompt(9, m.vocab_size(), 21);
  for (int i = 0; i < 9; ++i) prompt.push_back(prompt[i % 3]);

  GenerationParams plain;
  plain.temperature = 0.8f;
  plain.seed = 5;
  // The random model's next-token distribution is sharp: with only a repetition penalty of 1.3 on
  // the greedy set and a frequency penalty of 0.4 on the sampled one, no penalised draw left the raw
  // argmax (H200). The frequency penalties below grow with every repeat of the leading token, so
  // they move the choice within 24 steps.
  std::vector<GenerationParams> penalised(3);
  penalised[0].repetition_penalty = 1.3f;  // greedy
  penalised[0].frequency_penalty = 1.5f;
  penalised[1].temperature = 0.9f;
  penalised[1].top_k = 50;
  penalised[1].presence_penalty = 0.8f;
  penalised[1].frequency_penalty = 2.0f;
  penalised[1].seed = 7;
  penalised[2].temperature = 1.1f;
  penalised[2].top_p = 0.9f;
  penalised[2].min_p = 0.02f;
  penalised[2].repetition_penalty = 1.2f;
  penalised[2].frequency_penalty = -0.3f;
  penalised[2].seed = 9;
  auto row = [](const GenerationParams& p) {
    kernels::cuda::SamplingRowParams r;
    r.temperature = p.temperature;
    r.top_k = static_cast<int32_t>(p.top_k);
    r.top_p = p.top_p;
    r.min_p = p.min_p;
    r.repetition_penalty = p.repetition_penalty;
    r.presence_penalty = p.presence_penalty;
    r.frequency_penalty = p.frequency_penalty;
    return r;
  };
  int differing = 0;  // penalised draws that are not the raw argmax
  for (size_t set = 0; set < penalised.size(); ++set) {
    SCOPED_TRACE(set);
    const GenerationParams& pp = penalised[set];
    const SequenceId ref[] = {*m.AddSequence(), *m.AddSequence()};
    const SequenceId dev[] = {*m.AddSequence(), *m.AddSequence()};
    for (SequenceId s : dev) EXPECT_TRUE(m.HasTokenCounts(s));
    Sampler ref_samplers[] = {Sampler(pp), Sampler(plain)};
    Sampler dev_samplers[] = {Sampler(pp), Sampler(plain)};
    std::vector<int32_t> ref_out[2], dev_out[2];
    for (int i = 0; i < 2; ++i) {
      auto lr = m.Prefill(ref[i], prompt);
      auto ld = m.Prefill(dev[i], prompt);
      ASSERT_TRUE(lr.ok() && ld.ok());
      ref_out[i].push_back(ref_samplers[i].Sample(*lr, prompt, ref_out[i]));
      dev_out[i].push_back(dev_samplers[i].Sample(*ld, prompt, dev_out[i]));
    }
    const kernels::cuda::SamplingRowParams rows[] = {row(pp), row(plain)};
    for (int t = 0; t < 24; ++t) {
      SCOPED_TRACE(t);
      const int32_t ref_in[] = {ref_out[0].back(), ref_out[1].back()};
      auto logits = m.DecodeStep(ref, ref_in);
      ASSERT_TRUE(logits.ok()) << logits.status();
      const int32_t dev_in[] = {dev_out[0].back(), dev_out[1].back()};
      double uniforms[2];
      for (int i = 0; i < 2; ++i) {
        uniforms[i] = dev_samplers[i].params().temperature != 0.0f ? dev_samplers[i].DrawUniform() : 0.0;
      }
      auto sampled = m.DecodeAndSample(dev, dev_in, rows, uniforms);
      ASSERT_TRUE(sampled.ok()) << sampled.status();
      const size_t V = static_cast<size_t>(m.vocab_size());
      for (int i = 0; i < 2; ++i) {
        const absl::Span<const float> r = absl::MakeConstSpan(*logits).subspan(i * V, V);
        ref_out[i].push_back(ref_samplers[i].Sample(r, prompt, ref_out[i]));
        dev_out[i].push_back((*sampled)[i]);
        if (i == 0 && ArgMax(r) != ref_out[i].back()) ++differing;
      }
      ASSERT_EQ(dev_out[0], ref_out[0]);
      ASSERT_EQ(dev_out[1], ref_out[1]);
    }
    for (SequenceId s : ref) ASSERT_TRUE(m.Release(s).ok());
    for (SequenceId s : dev) ASSERT_TRUE(m.Release(s).ok());
  }
  EXPECT_GT(differing, 0);
}

// The real SmolLM2 artifacts (fp16 import, quantized), when present: BITLOOM_GPU_TEST_ARTIFACTS
// (':'-separated paths), else the stores docs/RESULTS.md uses.
TEST(GpuDecoderModel, RealSmolLM2Artifacts) {
  SKIP_WITHOUT_GPU();
  std::vector<std::string> paths;
  if (const char* env = std::getenv("BITLOOM_GPU_TEST_ARTIFACTS"); env != nullptr && *env != '\0') {
    paths = absl::StrSplit(env, ':', absl::SkipEmpty());
  } else {
    paths = {"/tmp/bitloom-eval-store/smollm2-135m-fp16.bitloom", "/tmp/demo-store/smollm2-q4.0.bitloom"};
  }
  int ran = 0;
  for (const std::string& path : paths) {
    if (!std::filesystem::exists(path)) continue;
    SCOPED_TRACE(path);
    auto reader = Open(path);
    ASSERT_NE(reader, nullptr);
    ThreadPool threads(8);
    ArtifactWeightSource source(*reader, &threads);
    auto cpu = DecoderModel::Load(reader->manifest().config(), source, &threads);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    auto pool = DevicePool(uint64_t{2} << 30);
    GpuModelOptions o;
    o.model_id = "real";
    o.max_batch = 4;
    o.max_seq_len = 1024;
    o.kv_pages = 256;
    o.prefill_chunk = 64;
    auto gpu = GpuDecoderModel::Load(*reader, pool.get(), o);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    Agreement agreement;
    agreement.tolerance = 2e-2;
    CompareWithCpu(**cpu, **gpu, {7, 100}, 16, &agreement);
    agreement.Expect(path);
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "no SmolLM2 artifact found (set BITLOOM_GPU_TEST_ARTIFACTS)";
}

}  // namespace
}  // namespace bitloom::engine
