// Golden tests: our GGUF dequantization and Hugging Face view against the `gguf` Python package,
// value for value (exact equality: both sides compute each block formula in fp32 in the same order).
// They need the fixture models (scripts/fetch-models.sh) and the venv (scripts/python-env.sh) and
// skip, saying which is missing, without them.
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bitloom/formats/checkpoint.h"
#include "bitloom/formats/gguf_dequant.h"
#include "bitloom/formats/gguf_file.h"
#include "golden_util.h"
#include "gtest/gtest.h"

namespace bitloom::formats {
namespace {

using testing::GoldenStream;

constexpr char kSmol[] = "SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kGemma[] = "gemma-3-270m-q4_k_m.gguf";

// Counts values that differ (two NaNs count as equal) and tracks the largest difference.
struct Diff {
  uint64_t mismatches = 0;
  double max_abs = 0;
  void Add(const float* a, const float* b, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) continue;
      ++mismatches;
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(a[i]) - b[i]));
    }
  }
};

#define SKIP_WITHOUT_VENV()                                                                  \
  if (testing::VenvPython().empty())                                                         \
  GTEST_SKIP() << "no Python venv at $BITLOOM_VENV or ~/.cache/bitloom/venv: run "           \
                  "scripts/python-env.sh to enable the golden tests against the gguf package"

#define SKIP_WITHOUT_MODEL(path, file)                                                     \
  if ((path).empty())                                                                      \
  GTEST_SKIP() << "fixture model " << (file) << " not in $BITLOOM_MODEL_CACHE or "          \
               << "~/.cache/bitloom/models: run scripts/fetch-models.sh (needs the network)"

TEST(GgufGoldenTest, RandomBlocksOfEveryTypeMatchGgufPackage) {
  SKIP_WITHOUT_VENV();
  GoldenStream stream("blocks 20251127");
  ASSERT_TRUE(stream.ok());
  int types = 0;
  for (std::string line = stream.ReadLine(); line != "E"; line = stream.ReadLine()) {
    ASSERT_FALSE(line.empty()) << "stream ended early";
    std::istringstream in(line);
    char tag;
    uint32_t type;
    size_t values, bytes;
    ASSERT_TRUE(in >> tag >> type >> values >> bytes) << line;
    std::vector<uint8_t> raw(bytes);
    std::vector<float> want;
    ASSERT_TRUE(stream.Read(raw.data(), bytes));
    ASSERT_TRUE(stream.ReadFloats(&want, values));
    std::vector<float> got(values);
    ASSERT_TRUE(DequantizeGguf(static_cast<GgmlType>(type), raw, absl::MakeSpan(got)).ok());
    Diff d;
    d.Add(got.data(), want.data(), values);
    EXPECT_EQ(d.mismatches, 0u) << GetGgmlTypeTraits(static_cast<GgmlType>(type)).name
                                << ": max abs diff " << d.max_abs;
    ++types;
  }
  if (stream.Close() == 3) GTEST_SKIP() << "the venv has no gguf package";
  EXPECT_EQ(types, 13);
}

// Streams every tensor of `file` from the gguf package and compares it, chunk by chunk, with ours.
void CompareAllTensors(const std::string& path) {
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  GoldenStream stream("tensors " + path);
  ASSERT_TRUE(stream.ok());
  size_t tensors = 0;
  std::vector<float> want, got;
  for (std::string line = stream.ReadLine(); line != "E"; line = stream.ReadLine()) {
    ASSERT_FALSE(line.empty()) << "stream ended early after " << tensors << " tensors";
    std::istringstream in(line);
    char tag;
    std::string name;
    uint64_t rows, cols;
    ASSERT_TRUE(in >> tag >> name >> rows >> cols) << line;
    const GgufTensorInfo* info = (*file)->FindTensor(name);
    ASSERT_NE(info, nullptr) << name;
    ASSERT_EQ(info->num_rows(), rows) << name;
    ASSERT_EQ(info->row_length(), cols) << name;
    Diff d;
    constexpr uint64_t kChunk = 1024;
    for (uint64_t r = 0; r < rows; r += kChunk) {
      const uint64_t n = std::min(kChunk, rows - r);
      ASSERT_TRUE(stream.ReadFloats(&want, n * cols)) << name;
      got.resize(n * cols);
      ASSERT_TRUE((*file)->DequantizeRows(*info, r, n, absl::MakeSpan(got)).ok()) << name;
      d.Add(got.data(), want.data(), got.size());
    }
    EXPECT_EQ(d.mismatches, 0u) << name << " (" << GetGgmlTypeTraits(info->type).name
                                << "): max abs diff " << d.max_abs;
    ++tensors;
  }
  if (stream.Close() == 3) GTEST_SKIP() << "the venv has no gguf package";
  EXPECT_EQ(tensors, (*file)->tensors().size());
}

TEST(GgufGoldenTest, SmolLM2EveryTensorMatchesGgufPackage) {
  SKIP_WITHOUT_VENV();
  const std::string path = testing::ModelPath(kSmol);
  SKIP_WITHOUT_MODEL(path, kSmol);
  CompareAllTensors(path);
}

TEST(GgufGoldenTest, Gemma3EveryTensorMatchesGgufPackage) {
  SKIP_WITHOUT_VENV();
  const std::string path = testing::ModelPath(kGemma);
  SKIP_WITHOUT_MODEL(path, kGemma);
  CompareAllTensors(path);
}

// The Checkpoint view (un-permuted Q/K, Gemma norms as w) against the same transform done in numpy.
void CompareHfView(const std::string& path, size_t expected_records) {
  auto ckpt = OpenCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  GoldenStream stream("hf " + path);
  ASSERT_TRUE(stream.ok());
  size_t records = 0;
  std::vector<float> want;
  for (std::string line = stream.ReadLine(); line != "E"; line = stream.ReadLine()) {
    ASSERT_FALSE(line.empty()) << "stream ended early";
    std::istringstream in(line);
    char tag;
    std::string name;
    uint64_t rows, cols;
    ASSERT_TRUE(in >> tag >> name >> rows >> cols) << line;
    ASSERT_TRUE(stream.ReadFloats(&want, rows * cols));
    auto got = (*ckpt)->ReadF32(name);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want.size()) << name;
    Diff d;
    d.Add(got->data(), want.data(), want.size());
    EXPECT_EQ(d.mismatches, 0u) << name << ": max abs diff " << d.max_abs;
    ++records;
  }
  if (stream.Close() == 3) GTEST_SKIP() << "the venv has no gguf package";
  EXPECT_EQ(records, expected_records);
}

TEST(GgufGoldenTest, SmolLM2QueryKeyRowsAreUnpermuted) {
  SKIP_WITHOUT_VENV();
  const std::string path = testing::ModelPath(kSmol);
  SKIP_WITHOUT_MODEL(path, kSmol);
  CompareHfView(path, 30 * 2);
}

TEST(GgufGoldenTest, Gemma3NormsAreReturnedAsHuggingFaceStoresThem) {
  SKIP_WITHOUT_VENV();
  const std::string path = testing::ModelPath(kGemma);
  SKIP_WITHOUT_MODEL(path, kGemma);
  CompareHfView(path, 18 * 6 + 1);
}

TEST(GgufModelTest, SmolLM2Config) {
  const std::string path = testing::ModelPath(kSmol);
  SKIP_WITHOUT_MODEL(path, kSmol);
  auto ckpt = OpenCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const v1::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.architecture(), "llama");
  EXPECT_EQ(c.vocab_size(), 49152u);
  EXPECT_EQ(c.hidden_size(), 576u);
  EXPECT_EQ(c.intermediate_size(), 1536u);
  EXPECT_EQ(c.num_layers(), 30u);
  EXPECT_EQ(c.num_attention_heads(), 9u);
  EXPECT_EQ(c.num_key_value_heads(), 3u);
  EXPECT_EQ(c.head_dim(), 64u);
  EXPECT_EQ(c.max_position_embeddings(), 8192u);
  EXPECT_FLOAT_EQ(c.rope_theta(), 100000.0f);
  EXPECT_FLOAT_EQ(c.rms_norm_eps(), 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings());
  EXPECT_FALSE(c.attention_bias());
  EXPECT_FALSE(c.qk_norm());
  EXPECT_EQ(c.hidden_activation(), "silu");
  ASSERT_EQ(c.bos_token_ids_size(), 1);
  EXPECT_EQ(c.bos_token_ids(0), 1u);
  ASSERT_GE(c.eos_token_ids_size(), 1);
  EXPECT_EQ(c.eos_token_ids(0), 2u);  // <|im_end|>
  EXPECT_EQ((*ckpt)->FindTensor("lm_head.weight"), nullptr);
  const CheckpointTensor* q = (*ckpt)->FindTensor("layers.0.attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<uint64_t>{576, 576}));
  EXPECT_EQ(q->source_type, "Q4_1");
  const v1::GgufTokenizer& t = (*ckpt)->tokenizer().gguf();
  EXPECT_EQ(t.model(), "gpt2");
  EXPECT_EQ(t.pre(), "smollm");
  EXPECT_EQ(t.tokens_size(), 49152);
  EXPECT_EQ(t.merges_size(), 48900);
  EXPECT_FALSE((*ckpt)->chat_template().empty());
  EXPECT_EQ((*ckpt)->source().kind(), "gguf");
}

TEST(GgufModelTest, Gemma3Config) {
  const std::string path = testing::ModelPath(kGemma);
  SKIP_WITHOUT_MODEL(path, kGemma);
  auto ckpt = OpenCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const v1::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.architecture(), "gemma3");
  EXPECT_EQ(c.vocab_size(), 262144u);
  EXPECT_EQ(c.hidden_size(), 640u);
  EXPECT_EQ(c.num_layers(), 18u);
  EXPECT_EQ(c.num_attention_heads(), 4u);
  EXPECT_EQ(c.num_key_value_heads(), 1u);
  EXPECT_EQ(c.head_dim(), 256u);
  EXPECT_EQ(c.sliding_window(), 512u);
  EXPECT_EQ(c.sliding_window_pattern(), 6u);
  EXPECT_FLOAT_EQ(c.rope_theta(), 1e6f);
  EXPECT_FLOAT_EQ(c.rope_local_theta(), 1e4f);
  EXPECT_FLOAT_EQ(c.query_pre_attn_scalar(), 256.0f);
  EXPECT_FLOAT_EQ(c.embedding_scale(), std::sqrt(640.0f));
  EXPECT_EQ(c.hidden_activation(), "gelu_tanh");
  EXPECT_TRUE(c.qk_norm());
  EXPECT_TRUE(c.tie_word_embeddings());
  ASSERT_EQ(c.bos_token_ids_size(), 1);
  EXPECT_EQ(c.bos_token_ids(0), 2u);
  // <eos> and <end_of_turn>, as in Gemma 3's generation_config.json.
  EXPECT_EQ(std::vector<uint32_t>(c.eos_token_ids().begin(), c.eos_token_ids().end()),
            (std::vector<uint32_t>{1, 106}));
  EXPECT_EQ((*ckpt)->tokenizer().gguf().model(), "llama");
  EXPECT_EQ((*ckpt)->tensors().size(), 236u);
}

}  // namespace
}  // namespace bitloom::formats
