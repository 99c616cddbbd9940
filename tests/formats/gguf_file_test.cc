// GgufFile and the GGUF checkpoint on small synthetic files: every metadata type, v2 and v3,
// alignment, truncation at every byte, hostile counts and offsets, and the model-level mapping.
#include "bitloom/formats/gguf_file.h"

#include <cmath>
#include <numeric>

#include "bitloom/formats/checkpoint.h"
#include "gtest/gtest.h"
#include "test_files.h"

namespace bitloom::formats {
namespace {

using testing::Bytes;
using testing::GgufBuilder;
using testing::TempDir;

GgufBuilder AllTypes() {
  GgufBuilder g;
  g.Kv("u8", 0, Bytes().Put<uint8_t>(200))
      .Kv("i8", 1, Bytes().Put<int8_t>(-5))
      .Kv("u16", 2, Bytes().Put<uint16_t>(60000))
      .Kv("i16", 3, Bytes().Put<int16_t>(-30000))
      .KvU32("u32", 4000000000u)
      .Kv("i32", 5, Bytes().Put<int32_t>(-2000000000))
      .KvF32("f32", 1.5f)
      .KvBool("bool", true)
      .KvStr("str", "hello")
      .Kv("u64", 10, Bytes().Put<uint64_t>(1ull << 40))
      .Kv("i64", 11, Bytes().Put<int64_t>(-(1ll << 40)))
      .Kv("f64", 12, Bytes().Put<double>(0.25))
      .KvStrArray("strs", {"a", "", "ccc"})
      .KvI32Array("ints", {1, -2, 3})
      .Kv("bools", 9, Bytes().Put<uint32_t>(7).Put<uint64_t>(2).Put<uint8_t>(0).Put<uint8_t>(1))
      .Kv("floats", 9, Bytes().Put<uint32_t>(6).Put<uint64_t>(2).Put<float>(0.5f).Put<float>(-1.0f));
  // An array of two arrays: [[1, 2], ["x"]].
  Bytes nested;
  nested.Put<uint32_t>(9).Put<uint64_t>(2);
  nested.Put<uint32_t>(4).Put<uint64_t>(2).Put<uint32_t>(1).Put<uint32_t>(2);
  nested.Put<uint32_t>(8).Put<uint64_t>(1).Str("x");
  g.Kv("nested", 9, nested);
  g.TensorF32("a", {4, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  g.TensorF32("b", {3}, {-1, -2, -3});
  return g;
}

class GgufVersionTest : public ::testing::TestWithParam<std::pair<uint32_t, uint64_t>> {};

TEST_P(GgufVersionTest, ReadsEveryMetadataTypeAndTensorTable) {
  const auto [version, alignment] = GetParam();
  TempDir dir;
  GgufBuilder g = AllTypes();
  if (alignment != 32) g.KvU32("general.alignment", static_cast<uint32_t>(alignment));
  auto f = GgufFile::Open(dir.Write("m.gguf", g.Build(version, alignment)));
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& file = **f;
  EXPECT_EQ(file.version(), version);
  EXPECT_EQ(file.alignment(), alignment);
  EXPECT_EQ(file.data_offset() % alignment, 0u);
  EXPECT_EQ(*file.GetUint("u8"), 200u);
  EXPECT_EQ(*file.Find("i8")->AsInt(), -5);
  EXPECT_EQ(*file.GetUint("u16"), 60000u);
  EXPECT_EQ(*file.Find("i16")->AsInt(), -30000);
  EXPECT_EQ(*file.GetUint("u32"), 4000000000u);
  EXPECT_EQ(*file.Find("i32")->AsInt(), -2000000000);
  EXPECT_EQ(*file.GetDouble("f32"), 1.5);
  EXPECT_TRUE(*file.GetBool("bool"));
  EXPECT_EQ(*file.GetString("str"), "hello");
  EXPECT_EQ(*file.GetUint("u64"), 1ull << 40);
  EXPECT_EQ(*file.Find("i64")->AsInt(), -(1ll << 40));
  EXPECT_EQ(*file.GetDouble("f64"), 0.25);
  EXPECT_FALSE(file.GetUint("i8").ok());      // negative
  EXPECT_FALSE(file.GetString("u8").ok());    // wrong type, named
  EXPECT_EQ(file.GetUint("absent").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*file.Find("strs")->AsStringArray(), (std::vector<absl::string_view>{"a", "", "ccc"}));
  EXPECT_EQ(*file.Find("ints")->AsIntArray(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ((*file.Find("bools")->AsArray())->raw.size(), 2u);
  EXPECT_EQ(*file.Find("floats")->AsDoubleArray(), (std::vector<double>{0.5, -1.0}));
  const GgufArray* nested = *file.Find("nested")->AsArray();
  ASSERT_EQ(nested->arrays.size(), 2u);
  EXPECT_EQ(*nested->arrays[0].AsIntArray(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*nested->arrays[1].AsStringArray(), (std::vector<absl::string_view>{"x"}));
  ASSERT_EQ(file.tensors().size(), 2u);
  const GgufTensorInfo* a = file.FindTensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->ne, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(a->num_rows(), 2u);
  EXPECT_EQ(*file.DequantizeF32(*a), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(*file.DequantizeF32(*file.FindTensor("b")), (std::vector<float>{-1, -2, -3}));
  EXPECT_EQ(file.FindTensor("b")->file_offset % alignment, 0u);
  std::vector<float> row(4);
  ASSERT_TRUE(file.DequantizeRows(*a, 1, 1, absl::MakeSpan(row)).ok());
  EXPECT_EQ(row, (std::vector<float>{4, 5, 6, 7}));
  EXPECT_FALSE(file.DequantizeRows(*a, 2, 1, absl::MakeSpan(row)).ok());
}

INSTANTIATE_TEST_SUITE_P(VersionsAndAlignments, GgufVersionTest,
                         ::testing::Values(std::make_pair(2u, uint64_t{32}), std::make_pair(3u, uint64_t{32}),
                                           std::make_pair(3u, uint64_t{64}), std::make_pair(2u, uint64_t{8})));

TEST(GgufFileTest, EveryTruncationIsACleanError) {
  TempDir dir;
  const std::string full = AllTypes().Build();
  ASSERT_TRUE(GgufFile::Open(dir.Write("full.gguf", full)).ok());
  for (size_t len = 0; len < full.size(); ++len) {
    auto f = GgufFile::Open(dir.Write("t.gguf", full.substr(0, len)));
    // The last tensor's data ends the file, so every shorter prefix must fail.
    EXPECT_FALSE(f.ok()) << "prefix of " << len << " bytes parsed";
  }
}

std::string Header(uint64_t tensors, uint64_t kvs) {
  return Bytes().Raw("GGUF").Put<uint32_t>(3).Put<uint64_t>(tensors).Put<uint64_t>(kvs).str();
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  TempDir dir;
  auto f = GgufFile::Open(dir.Write("bad.gguf", bytes));
  ASSERT_FALSE(f.ok()) << "parsed; expected an error containing '" << fragment << "'";
  EXPECT_NE(std::string(f.status().message()).find(fragment), std::string::npos) << f.status();
}

TEST(GgufFileTest, HostileHeadersAreRejected) {
  ExpectInvalid("GGUX", "bad magic");
  ExpectInvalid(Bytes().Raw("GGUF").Put<uint32_t>(1).str(), "version 1");
  ExpectInvalid(Bytes().Raw("GGUF").Put<uint32_t>(0x03000000).str(), "big-endian");
  ExpectInvalid(Bytes().Raw("GGUF").Put<uint32_t>(7).str(), "version 7");
  ExpectInvalid(Header(0, ~0ull), "metadata count");
  ExpectInvalid(Header(~0ull >> 1, 0), "tensor count");
  // A string length far past the end.
  ExpectInvalid(Header(0, 1) + Bytes().Put<uint64_t>(1ull << 62).str() + std::string(64, '\0'), "truncated");
  // An array claiming 2^60 elements.
  ExpectInvalid(Header(0, 1) + Bytes().Str("k").Put<uint32_t>(9).Put<uint32_t>(5).Put<uint64_t>(1ull << 60).str(),
                "array of");
  ExpectInvalid(Header(0, 1) + Bytes().Str("k").Put<uint32_t>(13).str() + std::string(64, '\0'),
                "unknown value type");
  ExpectInvalid(Header(0, 1) + Bytes().Str("k").Put<uint32_t>(7).Put<uint8_t>(2).str() + std::string(64, '\0'),
                "bool");
  // Arrays nested past the depth limit.
  Bytes deep;
  deep.Str("k").Put<uint32_t>(9);
  for (int i = 0; i < 10; ++i) deep.Put<uint32_t>(9).Put<uint64_t>(1);
  deep.Put<uint32_t>(4).Put<uint64_t>(0);
  ExpectInvalid(Header(0, 1) + deep.str() + std::string(64, '\0'), "nested deeper");
  ExpectInvalid(GgufBuilder().KvU32("k", 1).KvU32("k", 2).Build(), "duplicate metadata key");
  ExpectInvalid(GgufBuilder().KvU32("general.alignment", 3).Build(), "general.alignment 3");
  ExpectInvalid(GgufBuilder().KvStr("general.alignment", "x").Build(), "general.alignment");
}

TEST(GgufFileTest, HostileTensorTablesAreRejected) {
  auto table = [](uint32_t n_dims, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Bytes b;
    b.Str("t").Put<uint32_t>(n_dims);
    for (uint64_t d : ne) b.Put(d);
    b.Put<uint32_t>(type).Put<uint64_t>(offset);
    std::string s = Header(1, 0) + b.str();
    s.resize((s.size() + 31) / 32 * 32 + 64, '\0');  // 64 bytes of data
    return s;
  };
  ASSERT_TRUE([&] {
    TempDir d;
    return GgufFile::Open(d.Write("ok.gguf", table(1, {16}, 0, 0))).ok();
  }());
  ExpectInvalid(table(5, {1, 1, 1, 1, 1}, 0, 0), "dimensions");
  ExpectInvalid(table(0, {}, 0, 0), "dimensions");
  ExpectInvalid(table(2, {1ull << 32, 1ull << 32}, 0, 0), "overflows");
  ExpectInvalid(table(1, {17}, 0, 0), "outside the data section");
  ExpectInvalid(table(1, {16}, 0, 32), "outside the data section");
  ExpectInvalid(table(1, {16}, 0, 8), "not a multiple of the alignment");
  ExpectInvalid(table(1, {16}, 0, ~0ull & ~31ull), "outside the data section");
  ExpectInvalid(table(1, {16}, 99, 0), "unknown ggml type");
  ExpectInvalid(table(1, {16}, 12, 0), "block size");  // Q4_K rows are multiples of 256
  ExpectInvalid(GgufBuilder().TensorF32("t", {1}, {1}).TensorF32("t", {1}, {2}).Build(), "duplicate tensor");
}

// A one-layer llama with GQA in GGUF layout: hidden 8, 2 heads of 4, 1 kv head, ffn 16, vocab 4.
GgufBuilder TinyLlama(const std::string& arch, bool with_output) {
  GgufBuilder g;
  g.KvStr("general.architecture", arch)
      .KvU32(arch + ".embedding_length", 8)
      .KvU32(arch + ".feed_forward_length", 16)
      .KvU32(arch + ".block_count", 1)
      .KvU32(arch + ".attention.head_count", 2)
      .KvU32(arch + ".attention.head_count_kv", 1)
      .KvU32(arch + ".context_length", 128)
      .KvF32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f)
      .KvF32(arch + ".rope.freq_base", 10000.f)
      .KvStr("tokenizer.ggml.model", "gpt2")
      .KvStrArray("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "<|im_end|>"})
      .KvI32Array("tokenizer.ggml.token_type", {3, 3, 1, 3})
      .KvStrArray("tokenizer.ggml.merges", {})
      .KvU32("tokenizer.ggml.bos_token_id", 0)
      .KvU32("tokenizer.ggml.eos_token_id", 1)
      .KvStr("tokenizer.chat_template", "{{ x }}");
  auto seq = [](size_t n, float start) {
    std::vector<float> v(n);
    std::iota(v.begin(), v.end(), start);
    return v;
  };
  g.TensorF32("token_embd.weight", {8, 4}, seq(32, 0));
  g.TensorF32("output_norm.weight", {8}, seq(8, 1));
  if (with_output) g.TensorF32("output.weight", {8, 4}, seq(32, 100));
  g.TensorF32("blk.0.attn_norm.weight", {8}, seq(8, 1));
  g.TensorF32("blk.0.attn_q.weight", {8, 8}, seq(64, 0));  // row r holds 8r .. 8r+7
  g.TensorF32("blk.0.attn_k.weight", {8, 4}, seq(32, 0));
  g.TensorF32("blk.0.attn_v.weight", {8, 4}, seq(32, 0));
  g.TensorF32("blk.0.attn_output.weight", {8, 8}, seq(64, 0));
  g.TensorF32("blk.0.ffn_norm.weight", {8}, seq(8, 1));
  g.TensorF32("blk.0.ffn_gate.weight", {8, 16}, seq(128, 0));
  g.TensorF32("blk.0.ffn_up.weight", {8, 16}, seq(128, 0));
  g.TensorF32("blk.0.ffn_down.weight", {16, 8}, seq(128, 0));
  return g;
}

TEST(GgufCheckpointTest, LlamaQueryKeyRowsAreUnpermutedAndEmbeddingsTied) {
  TempDir dir;
  auto ckpt = OpenCheckpoint(dir.Write("tiny.gguf", TinyLlama("llama", false).Build()));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const v1::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.head_dim(), 4u);
  EXPECT_TRUE(c.tie_word_embeddings());
  EXPECT_EQ((*ckpt)->chat_template(), "{{ x }}");
  EXPECT_EQ(std::vector<uint32_t>(c.eos_token_ids().begin(), c.eos_token_ids().end()),
            (std::vector<uint32_t>{1, 3}));
  // GGUF row h*4 + 2j + i holds HF row h*4 + 2i + j: per head, GGUF rows 0,1,2,3 = HF rows 0,2,1,3.
  auto q = (*ckpt)->ReadF32("layers.0.attn.q_proj.weight");
  ASSERT_TRUE(q.ok()) << q.status();
  const int want_rows[] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ((*q)[r * 8], want_rows[r] * 8.0f) << "row " << r;
  auto k = (*ckpt)->ReadF32("layers.0.attn.k_proj.weight");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ((*k)[1 * 8], 2 * 8.0f);
  auto v = (*ckpt)->ReadF32("layers.0.attn.v_proj.weight");  // not permuted
  EXPECT_EQ((*v)[1 * 8], 8.0f);
  EXPECT_EQ((*ckpt)->ReadF32("nope").status().code(), absl::StatusCode::kNotFound);
  std::vector<float> small(3);
  EXPECT_FALSE((*ckpt)->ReadF32Into("embed_tokens.weight", absl::MakeSpan(small)).ok());
  auto digest = (*ckpt)->ComputeDigest();
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(digest->size(), 64u);
}

TEST(GgufCheckpointTest, Qwen2IsNotPermuted) {
  TempDir dir;
  auto ckpt = OpenCheckpoint(dir.Write("tiny.gguf", TinyLlama("qwen2", true).Build()));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE((*ckpt)->config().tie_word_embeddings());
  auto q = (*ckpt)->ReadF32("layers.0.attn.q_proj.weight");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)[1 * 8], 8.0f);
}

TEST(GgufCheckpointTest, UnsupportedArchitectureIsNamed) {
  TempDir dir;
  auto ckpt = OpenCheckpoint(dir.Write("tiny.gguf", TinyLlama("phi3", true).Build()));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(std::string(ckpt.status().message())
                .find("unsupported architecture 'phi3' (supported: llama, mistral, qwen2, qwen3, gemma3)"),
            std::string::npos)
      << ckpt.status();
}

TEST(GgufCheckpointTest, MissingTensorIsNamed) {
  TempDir dir;
  std::string bytes = TinyLlama("llama", true).Build();
  // Rename ffn_up so that it is missing (same length keeps the file valid).
  const size_t at = bytes.find("blk.0.ffn_up.weight");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 19, "blk.0.ffn_up.weighu");
  auto ckpt = OpenCheckpoint(dir.Write("tiny.gguf", bytes));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(std::string(ckpt.status().message()).find("ffn_up.weighu"), std::string::npos) << ckpt.status();
}

}  // namespace
}  // namespace bitloom::formats
