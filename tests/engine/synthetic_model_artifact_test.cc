// Synthetic artifacts: the plans of the real shapes land on the target average bits per weight with
// two adjacent code widths; the bytes do not depend on threads or chunking; the blobs are canonical
// codec layouts (zero padding); and the written tiny and SmolLM2-shaped artifacts open with
// checksum verification, tokenize, load in the CPU DecoderModel and produce finite logits.
#include "bitloom/engine/synthetic_model_artifact.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "bitloom/core/dtype.h"
#include "bitloom/engine/artifact_weight_source.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/model_store.h"
#include "scratch_dir.h"

namespace bitloom::engine {
namespace {

// Scratch directories named after this test.
class ScratchDir : public testing::ScratchDir {
 public:
  ScratchDir() : testing::ScratchDir("synthetic_test") {}
};

struct PlanCase {
  const char* shape;
  double target;
};

class SyntheticPlanTest : public ::testing::TestWithParam<PlanCase> {};

TEST_P(SyntheticPlanTest, LandsOnTheTargetWithTwoAdjacentWidths) {
  const PlanCase& c = GetParam();
  auto config = SyntheticModelConfig(c.shape);
  ASSERT_TRUE(config.ok()) << config.status();
  SyntheticArtifactOptions options;
  options.bits_per_weight = c.target;
  auto plan = PlanSyntheticArtifact(*config, options);
  ASSERT_TRUE(plan.ok()) << plan.status();

  double bits = 0, weights = 0;
  std::set<int> widths;
  int linears = 0;
  for (const SyntheticTensor& t : plan->tensors) {
    if (!t.decoder_linear) continue;
    ++linears;
    EXPECT_EQ(t.entry.codec(), v1::CODEC_HADAMARD_SCALAR);
    bits += 8.0 * static_cast<double>(t.bytes);
    weights += static_cast<double>(t.entry.shape(0) * t.entry.shape(1));
    widths.insert(static_cast<int>(t.entry.bits_per_weight()));
  }
  EXPECT_EQ(linears, 7 * static_cast<int>(config->num_layers()));
  EXPECT_NEAR(bits / weights, plan->bits_per_weight, 1e-12);
  EXPECT_NEAR(plan->bits_per_weight, c.target, 0.01) << c.shape;
  ASSERT_EQ(widths.size(), 2u) << c.shape;
  EXPECT_EQ(*widths.rbegin(), *widths.begin() + 1);
}

INSTANTIATE_TEST_SUITE_P(RealShapes, SyntheticPlanTest,
                         ::testing::Values(PlanCase{"llama3-8b", 2.5}, PlanCase{"llama3-8b", 4.0},
                                           PlanCase{"llama3-70b", 2.5}, PlanCase{"llama3-70b", 4.0},
                                           PlanCase{"smollm2-135m", 2.5},
                                           PlanCase{"smollm2-135m", 4.0}));

TEST(SyntheticPlan, Llama3ShapesAndSizes) {
  auto config = SyntheticModelConfig("llama3-70b");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->hidden_size(), 8192u);
  EXPECT_EQ(config->num_layers(), 80u);
  EXPECT_EQ(config->num_attention_heads(), 64u);
  EXPECT_EQ(config->num_key_value_heads(), 8u);
  EXPECT_EQ(config->intermediate_size(), 28672u);
  EXPECT_EQ(config->vocab_size(), 128256u);
  EXPECT_EQ(config->rope_scaling_type(), "llama3");
  EXPECT_EQ(config->bos_token_ids(0), 128000u);
  SyntheticArtifactOptions options;
  options.bits_per_weight = 2.5;
  auto plan = PlanSyntheticArtifact(*config, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 68.5 G decoder weights at 2.5 bits, a 2.1 GB fp16 embedding, the head at K = 6.
  EXPECT_NEAR(static_cast<double>(plan->decoder_linear_bytes) / 1e9, 21.4, 0.1);
  EXPECT_NEAR(static_cast<double>(plan->total_bytes) / 1e9, 24.3, 0.1);
  EXPECT_NEAR(plan->head_bits_per_weight, 6.125, 1e-9);
  // Tensors of one input site share their rotation.
  const SyntheticTensor* q = nullptr;
  const SyntheticTensor* k = nullptr;
  const SyntheticTensor* o = nullptr;
  for (const SyntheticTensor& t : plan->tensors) {
    if (t.entry.name() == "layers.3.attn.q_proj.weight") q = &t;
    if (t.entry.name() == "layers.3.attn.k_proj.weight") k = &t;
    if (t.entry.name() == "layers.3.attn.o_proj.weight") o = &t;
  }
  ASSERT_TRUE(q && k && o);
  EXPECT_EQ(q->entry.params().at("rotation_seed"), k->entry.params().at("rotation_seed"));
  EXPECT_NE(q->entry.params().at("rotation_seed"), o->entry.params().at("rotation_seed"));
}

TEST(SyntheticPlan, RejectsBadOptions) {
  auto config = SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok());
  SyntheticArtifactOptions options;
  options.bits_per_weight = 9;
  EXPECT_EQ(PlanSyntheticArtifact(*config, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.bits_per_weight = 4;
  options.head_bits = 9;
  EXPECT_EQ(PlanSyntheticArtifact(*config, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SyntheticModelConfig("llama3-405b").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticTokenizer, LoadsWithTheWholeVocabulary) {
  for (uint32_t vocab : {512u, 49152u, 128256u}) {
    SyntheticSpecialTokens special;
    auto spec = SyntheticTokenizer(vocab, &special);
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto tokenizer = formats::Tokenizer::FromSpec(*spec);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_EQ((*tokenizer)->vocab_size(), static_cast<int32_t>(vocab));
    EXPECT_EQ((*tokenizer)->bos_id(), static_cast<int32_t>(special.bos));
    EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(static_cast<int32_t>(special.eot)));
    auto ids = (*tokenizer)->Encode("Hello, world! 123", /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->front(), static_cast<int32_t>(special.bos));
    auto text = (*tokenizer)->Decode(*ids, /*skip_special=*/true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, "Hello, world! 123");
    // Every id decodes, so random sampling always yields text.
    for (int32_t id : {0, 255, 256, static_cast<int32_t>(vocab) - 1}) {
      EXPECT_TRUE((*tokenizer)->Decode({id}).ok()) << id;
    }
  }
}

TEST(SyntheticBlob, BytesDoNotDependOnChunking) {
  auto config = SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok());
  SyntheticArtifactOptions options;
  options.bits_per_weight = 3.4;
  auto plan = PlanSyntheticArtifact(*config, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const SyntheticTensor& t : plan->tensors) {
    std::vector<uint8_t> whole(t.bytes), pieces(t.bytes);
    ASSERT_TRUE(FillSyntheticBlob(t, 7, 0, absl::MakeSpan(whole)).ok());
    // Odd piece sizes cut words, scales and the codes/scales boundary anywhere.
    for (uint64_t at = 0; at < t.bytes;) {
      const uint64_t n = std::min<uint64_t>(t.bytes - at, 1 + (at * 7919) % 4093);
      ASSERT_TRUE(FillSyntheticBlob(t, 7, at, absl::MakeSpan(pieces).subspan(at, n)).ok());
      at += n;
    }
    EXPECT_EQ(whole, pieces) << t.entry.name();
    std::vector<uint8_t> one(1);
    EXPECT_FALSE(FillSyntheticBlob(t, 7, t.bytes, absl::MakeSpan(one)).ok());
  }
}

TEST(SyntheticBlob, QuantizedBlobsAreCanonicalWithFiniteScales) {
  auto config = SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok());
  for (double target : {1.9, 2.5, 3.5, 5.5, 8.5}) {
    SyntheticArtifactOptions options;
    options.bits_per_weight = target;
    options.head_bits = 3;
    auto plan = PlanSyntheticArtifact(*config, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (const SyntheticTensor& t : plan->tensors) {
      if (t.entry.codec() != v1::CODEC_HADAMARD_SCALAR) continue;
      std::vector<uint8_t> blob(t.bytes);
      ASSERT_TRUE(FillSyntheticBlob(t, 1, 0, absl::MakeSpan(blob)).ok());
      auto layout = kernels::MakeScalarCodecLayout(
          static_cast<int64_t>(t.entry.shape(0)), static_cast<int64_t>(t.entry.shape(1)),
          static_cast<int>(t.entry.bits_per_weight()), static_cast<int>(t.entry.group_size()));
      ASSERT_TRUE(layout.ok());
      std::vector<uint8_t> codes;
      std::vector<uint16_t> scales;
      ASSERT_TRUE(kernels::UnpackScalarCodec(*layout, blob, &codes, &scales).ok());
      // Repacking writes zeros into every padding bit: equal bytes mean the padding was zero.
      auto repacked = kernels::PackScalarCodec(*layout, codes, scales);
      ASSERT_TRUE(repacked.ok());
      EXPECT_EQ(*repacked, blob) << t.entry.name() << " at K=" << t.entry.bits_per_weight();
      for (uint16_t s : scales) {
        const float v = F16ToF32(s);
        ASSERT_TRUE(std::isfinite(v) && v > 0) << t.entry.name();
      }
    }
  }
}

// Writes `shape` through a store in `dir`, then opens, verifies, tokenizes and runs it.
void WriteLoadAndRun(const std::string& dir, const std::string& shape, double target,
                     ThreadPool* pool, int layers = 0) {
  auto config = SyntheticModelConfig(shape);
  ASSERT_TRUE(config.ok());
  if (layers > 0) config->set_num_layers(static_cast<uint32_t>(layers));
  auto store = modelstore::ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto writer = (*store)->NewWriter(shape, /*overwrite=*/false);
  ASSERT_TRUE(writer.ok()) << writer.status();
  SyntheticArtifactOptions options;
  options.bits_per_weight = target;
  options.chunk_bytes = 100000;  // many chunks per large tensor, and partial words at the edges
  int progress_calls = 0;
  options.on_progress = [&](int done, int total, uint64_t) {
    ++progress_calls;
    EXPECT_LE(done, total);
  };
  auto plan = WriteSyntheticArtifact(*config, options, **writer, pool);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(progress_calls, static_cast<int>(plan->tensors.size()));

  auto reader = (*store)->OpenReader(shape, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const v1::ArtifactManifest& manifest = (*reader)->manifest();
  EXPECT_EQ(manifest.name(), shape);
  EXPECT_DOUBLE_EQ(manifest.bits_per_weight(), plan->bits_per_weight);
  EXPECT_EQ(manifest.tensors_size(), static_cast<int>(plan->tensors.size()));
  auto tokenizer = formats::Tokenizer::FromSpec(manifest.tokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), static_cast<int32_t>(config->vocab_size()));

  ArtifactWeightSource weights(**reader, pool);
  auto model = DecoderModel::Load(manifest.config(), weights, pool);
  ASSERT_TRUE(model.ok()) << model.status();
  auto prompt = (*tokenizer)->Encode("The quick brown fox jumps over the lazy dog", true);
  ASSERT_TRUE(prompt.ok());
  std::vector<int32_t> positions(prompt->size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  KvCache cache = (*model)->NewKvCache(64);
  auto logits = (*model)->Forward(*prompt, positions, cache, DecoderModel::Logits::kAll);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), prompt->size() * config->vocab_size());
  double sum_squares = 0;
  for (float v : *logits) {
    ASSERT_TRUE(std::isfinite(v));
    sum_squares += static_cast<double>(v) * v;
  }
  // RMS-preserving scales: logits of order one, neither vanishing nor exploding.
  const double rms = std::sqrt(sum_squares / static_cast<double>(logits->size()));
  EXPECT_GT(rms, 0.05) << shape;
  EXPECT_LT(rms, 20.0) << shape;
}

TEST(SyntheticArtifact, TinyWritesOpensAndRuns) {
  ScratchDir dir;
  ThreadPool pool(3);
  WriteLoadAndRun(dir.path(), "tiny", 2.5, &pool);
}

// As deep as Llama-3-70B: the RMS-preserving scales keep 80 layers of random weights finite.
TEST(SyntheticArtifact, EightyLayersStayFinite) {
  ScratchDir dir;
  ThreadPool pool(2);
  WriteLoadAndRun(dir.path(), "tiny", 2.5, &pool, 80);
}

TEST(SyntheticArtifact, SmolLm2ShapedWritesOpensAndRuns) {
  ScratchDir dir;
  ThreadPool pool(2);
  WriteLoadAndRun(dir.path(), "smollm2-135m", 4.0, &pool);
}

TEST(SyntheticArtifact, SameFileForAnyThreadCountAndChunkSize) {
  ScratchDir dir;
  auto config = SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok());
  std::vector<v1::ArtifactManifest> manifests;
  ThreadPool pool(4);
  for (auto [threads, chunk] :
       {std::pair<ThreadPool*, uint64_t>{nullptr, 1u << 20}, {&pool, 777}}) {
    const std::string path = dir.path() + "/a" + std::to_string(manifests.size()) + ".bitloom";
    auto writer = modelstore::ArtifactWriter::Create(path, dir.path());
    ASSERT_TRUE(writer.ok());
    SyntheticArtifactOptions options;
    options.bits_per_weight = 3.0;
    options.seed = 42;
    options.chunk_bytes = chunk;
    ASSERT_TRUE(WriteSyntheticArtifact(*config, options, **writer, threads).ok());
    auto reader = modelstore::ArtifactReader::Open(path, {.verify_checksums = true});
    ASSERT_TRUE(reader.ok()) << reader.status();
    manifests.push_back((*reader)->manifest());
  }
  ASSERT_EQ(manifests[0].tensors_size(), manifests[1].tensors_size());
  for (int i = 0; i < manifests[0].tensors_size(); ++i) {
    EXPECT_EQ(manifests[0].tensors(i).xxh3(), manifests[1].tensors(i).xxh3())
        << manifests[0].tensors(i).name();
  }
}

}  // namespace
}  // namespace bitloom::engine
