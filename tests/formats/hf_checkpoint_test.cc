// The Hugging Face directory reader on synthetic directories: config mapping per architecture, single
// and sharded safetensors, tokenizer files, special ids and clear errors.
#include <numeric>

#include "bitloom/formats/checkpoint.h"
#include "gtest/gtest.h"
#include "test_files.h"

namespace bitloom::formats {
namespace {

using testing::Bytes;
using testing::TempDir;

// A safetensors file of F32 tensors; `tensors` is (name, shape), values 0, 1, 2, ... per tensor.
std::string F32Safetensors(const std::vector<std::pair<std::string, std::vector<uint64_t>>>& tensors) {
  std::string header = "{";
  std::string data;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 1;
    std::string dims;
    for (uint64_t d : shape) {
      n *= d;
      dims += (dims.empty() ? "" : ",") + std::to_string(d);
    }
    if (header.size() > 1) header += ",";
    header += "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + 4 * n) + "]}";
    for (uint64_t i = 0; i < n; ++i) data += Bytes().Put<float>(static_cast<float>(i)).str();
  }
  header += "}";
  return Bytes().Put<uint64_t>(header.size()).Raw(header).Raw(data).str();
}

// Tensors of a one-layer model: hidden 8, 2 heads of 4, 1 kv head, ffn 16, vocab 4.
std::vector<std::pair<std::string, std::vector<uint64_t>>> TinyTensors(bool gemma, bool bias, bool qk_norm,
                                                                       const std::string& prefix = "model.") {
  std::vector<std::pair<std::string, std::vector<uint64_t>>> t = {
      {prefix + "embed_tokens.weight", {4, 8}},
      {prefix + "norm.weight", {8}},
      {prefix + "layers.0.input_layernorm.weight", {8}},
      {prefix + "layers.0.self_attn.q_proj.weight", {8, 8}},
      {prefix + "layers.0.self_attn.k_proj.weight", {4, 8}},
      {prefix + "layers.0.self_attn.v_proj.weight", {4, 8}},
      {prefix + "layers.0.self_attn.o_proj.weight", {8, 8}},
      {prefix + "layers.0.post_attention_layernorm.weight", {8}},
      {prefix + "layers.0.mlp.gate_proj.weight", {16, 8}},
      {prefix + "layers.0.mlp.up_proj.weight", {16, 8}},
      {prefix + "layers.0.mlp.down_proj.weight", {8, 16}},
      {prefix + "layers.0.rotary_emb.inv_freq", {2}},
  };
  if (gemma) {
    t.push_back({prefix + "layers.0.pre_feedforward_layernorm.weight", {8}});
    t.push_back({prefix + "layers.0.post_feedforward_layernorm.weight", {8}});
  }
  if (bias) {
    t.push_back({prefix + "layers.0.self_attn.q_proj.bias", {8}});
    t.push_back({prefix + "layers.0.self_attn.k_proj.bias", {4}});
    t.push_back({prefix + "layers.0.self_attn.v_proj.bias", {4}});
  }
  if (qk_norm) {
    t.push_back({prefix + "layers.0.self_attn.q_norm.weight", {4}});
    t.push_back({prefix + "layers.0.self_attn.k_norm.weight", {4}});
  }
  return t;
}

std::string Config(const std::string& model_type, const std::string& extra = "") {
  return R"({"model_type":")" + model_type +
         R"(","vocab_size":4,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,)"
         R"("num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"max_position_embeddings":64,)"
         R"("rms_norm_eps":1e-6,"rope_theta":500000.0,"bos_token_id":0,"eos_token_id":1)" +
         extra + "}";
}

void WriteTokenizer(const TempDir& dir) {
  dir.Write("tokenizer.json", R"({"model":{"type":"BPE"}})");
  dir.Write("tokenizer_config.json", R"({"add_bos_token":true,"chat_template":"{{ messages }}"})");
}

TEST(HfCheckpointTest, LlamaSingleFileWithLlama3RopeAndGenerationEos) {
  TempDir dir;
  auto tensors = TinyTensors(false, false, false);
  tensors.push_back({"lm_head.weight", {4, 8}});
  dir.Write("model.safetensors", F32Safetensors(tensors));
  dir.Write("config.json", Config("llama", R"(,"rope_scaling":{"rope_type":"llama3","factor":32.0,)"
                                           R"("low_freq_factor":1.0,"high_freq_factor":4.0,)"
                                           R"("original_max_position_embeddings":8192})"));
  dir.Write("generation_config.json", R"({"eos_token_id":[1,3]})");
  WriteTokenizer(dir);
  auto ckpt = OpenCheckpoint(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const v1::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.architecture(), "llama");
  EXPECT_EQ(c.rope_scaling_type(), "llama3");
  EXPECT_FLOAT_EQ(c.rope_scaling_factor(), 32.f);
  EXPECT_FLOAT_EQ(c.rope_high_freq_factor(), 4.f);
  EXPECT_EQ(c.rope_original_max_position_embeddings(), 8192u);
  EXPECT_FALSE(c.tie_word_embeddings());
  EXPECT_EQ(std::vector<uint32_t>(c.eos_token_ids().begin(), c.eos_token_ids().end()),
            (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ((*ckpt)->chat_template(), "{{ messages }}");
  EXPECT_EQ((*ckpt)->tokenizer().hf_json(), R"({"model":{"type":"BPE"}})");
  EXPECT_FALSE((*ckpt)->tokenizer().hf_config_json().empty());
  EXPECT_EQ((*ckpt)->source().kind(), "hf");
  auto mlp_norm = (*ckpt)->ReadF32("layers.0.mlp_norm.weight");  // Llama's post_attention_layernorm
  ASSERT_TRUE(mlp_norm.ok()) << mlp_norm.status();
  EXPECT_EQ((*mlp_norm)[7], 7.f);
  EXPECT_EQ((*ckpt)->FindTensor("layers.0.attn.q_proj.weight")->shape, (std::vector<uint64_t>{8, 8}));
  EXPECT_EQ((*ckpt)->ComputeDigest()->size(), 64u);
}

TEST(HfCheckpointTest, Qwen2ShardedWithBias) {
  TempDir dir;
  auto tensors = TinyTensors(false, true, false);
  std::vector<std::pair<std::string, std::vector<uint64_t>>> a(tensors.begin(), tensors.begin() + 5),
      b(tensors.begin() + 5, tensors.end());
  dir.Write("model-00001-of-00002.safetensors", F32Safetensors(a));
  dir.Write("model-00002-of-00002.safetensors", F32Safetensors(b));
  std::string map;
  for (const auto& [n, s] : a) map += (map.empty() ? "" : ",") + ("\"" + n + "\":\"model-00001-of-00002.safetensors\"");
  for (const auto& [n, s] : b) map += ",\"" + n + "\":\"model-00002-of-00002.safetensors\"";
  dir.Write("model.safetensors.index.json", "{\"weight_map\":{" + map + "}}");
  dir.Write("config.json", Config("qwen2", R"(,"tie_word_embeddings":true)"));
  WriteTokenizer(dir);
  auto ckpt = OpenCheckpoint(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->config().attention_bias());
  EXPECT_TRUE((*ckpt)->config().tie_word_embeddings());
  EXPECT_TRUE((*ckpt)->ReadF32("layers.0.attn.k_proj.bias").ok());
}

TEST(HfCheckpointTest, Gemma3ConditionalGenerationTextConfig) {
  TempDir dir;
  auto tensors = TinyTensors(true, false, true, "language_model.model.");
  tensors.push_back({"vision_tower.vision_model.x.weight", {2}});
  dir.Write("model.safetensors", F32Safetensors(tensors));
  dir.Write("config.json",
            R"({"model_type":"gemma3","eos_token_id":[1,106],"text_config":)" +
                Config("gemma3_text", R"(,"sliding_window":512,"query_pre_attn_scalar":256,)"
                                      R"("rope_local_base_freq":10000.0,"layer_types":["sliding_attention"])") +
                "}");
  WriteTokenizer(dir);
  auto ckpt = OpenCheckpoint(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const v1::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.architecture(), "gemma3");
  EXPECT_TRUE(c.qk_norm());
  EXPECT_TRUE(c.tie_word_embeddings());
  EXPECT_EQ(c.hidden_activation(), "gelu_tanh");
  EXPECT_EQ(c.sliding_window(), 512u);
  EXPECT_FLOAT_EQ(c.embedding_scale(), std::sqrt(8.f));
  EXPECT_TRUE((*ckpt)->FindTensor("layers.0.post_attn_norm.weight") != nullptr);
  EXPECT_TRUE((*ckpt)->FindTensor("layers.0.post_mlp_norm.weight") != nullptr);
}

TEST(HfCheckpointTest, ErrorsNameWhatWasFound) {
  TempDir dir;
  dir.Write("config.json", Config("phi3"));
  WriteTokenizer(dir);
  auto ckpt = OpenCheckpoint(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(std::string(ckpt.status().message()).find("unsupported architecture 'phi3'"), std::string::npos);

  dir.Write("config.json", Config("qwen3"));
  dir.Write("model.safetensors", F32Safetensors(TinyTensors(false, false, false)));
  ckpt = OpenCheckpoint(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(std::string(ckpt.status().message()).find("missing tensor 'lm_head.weight'"), std::string::npos)
      << ckpt.status();

  dir.Write("model.safetensors", "garbage");
  ckpt = OpenCheckpoint(dir.path());
  EXPECT_FALSE(ckpt.ok());

  TempDir empty;
  EXPECT_EQ(OpenCheckpoint(empty.path()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(OpenCheckpoint(empty.path() + "/nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bitloom::formats
