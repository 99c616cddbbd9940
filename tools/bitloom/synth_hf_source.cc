#include "synth_hf_source.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {
namespace {

// Values generated per pool task; the writer appends them in order.
constexpr uint64_t kChunkValues = uint64_t{16} << 20;

struct HfTensor {
  std::string name;
  std::vector<uint64_t> shape;
  float half_range = 0.0f;  // uniform in [-half_range, half_range]; 0: every value is 1 (a norm)
  uint64_t offset = 0;      // bytes into the data section
  uint64_t count() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
};

uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<HfTensor> Tensors(const v1::ModelConfig& c) {
  const uint64_t h = c.hidden_size(), in = c.intermediate_size(), vocab = c.vocab_size();
  const uint64_t hd = c.head_dim() != 0 ? c.head_dim() : h / c.num_attention_heads();
  const uint64_t q = c.num_attention_heads() * hd, kv = c.num_key_value_heads() * hd;
  // Variance 1/in for a uniform: half range √(3/in).
  auto linear = [](uint64_t cols) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(cols))); };
  std::vector<HfTensor> t = {{"model.embed_tokens.weight", {vocab, h}, 1.0f},
                             {"model.norm.weight", {h}, 0.0f}};
  if (!c.tie_word_embeddings()) t.push_back({"lm_head.weight", {vocab, h}, linear(h)});
  for (uint32_t l = 0; l < c.num_layers(); ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    t.push_back({p + "input_layernorm.weight", {h}, 0.0f});
    t.push_back({p + "self_attn.q_proj.weight", {q, h}, linear(h)});
    t.push_back({p + "self_attn.k_proj.weight", {kv, h}, linear(h)});
    t.push_back({p + "self_attn.v_proj.weight", {kv, h}, linear(h)});
    t.push_back({p + "self_attn.o_proj.weight", {h, q}, linear(q)});
    t.push_back({p + "post_attention_layernorm.weight", {h}, 0.0f});
    t.push_back({p + "mlp.gate_proj.weight", {in, h}, linear(h)});
    t.push_back({p + "mlp.up_proj.weight", {in, h}, linear(h)});
    t.push_back({p + "mlp.down_proj.weight", {h, in}, linear(in)});
  }
  uint64_t offset = 0;
  for (HfTensor& x : t) {
    x.offset = offset;
    offset += 2 * x.count();
  }
  return t;
}

nlohmann::json ConfigJson(const v1::ModelConfig& c) {
  nlohmann::json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size();
  j["hidden_size"] = c.hidden_size();
  j["intermediate_size"] = c.intermediate_size();
  j["num_hidden_layers"] = c.num_layers();
  j["num_attention_heads"] = c.num_attention_heads();
  j["num_key_value_heads"] = c.num_key_value_heads();
  if (c.head_dim() != 0) j["head_dim"] = c.head_dim();
  j["max_position_embeddings"] = c.max_position_embeddings();
  j["rms_norm_eps"] = c.rms_norm_eps();
  j["rope_theta"] = c.rope_theta();
  if (!c.rope_scaling_type().empty()) {
    j["rope_scaling"] = {{"rope_type", c.rope_scaling_type()},
                         {"factor", c.rope_scaling_factor()},
                         {"low_freq_factor", c.rope_low_freq_factor()},
                         {"high_freq_factor", c.rope_high_freq_factor()},
                         {"original_max_position_embeddings", c.rope_original_max_position_embeddings()}};
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings();
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float16";
  j["bos_token_id"] = c.bos_token_ids_size() > 0 ? c.bos_token_ids(0) : 0;
  j["eos_token_id"] = c.eos_token_ids_size() > 0 ? c.eos_token_ids(0) : 1;
  return j;
}

// Token i is the string "t<i>": distinct, no merges needed.
std::string TokenizerJson(uint32_t vocab) {
  std::string out = R"({"model": {"type": "BPE", "vocab": {)";
  for (uint32_t i = 0; i < vocab; ++i) absl::StrAppend(&out, i == 0 ? "" : ", ", "\"t", i, "\": ", i);
  out += R"(}, "merges": []}})";
  return out;
}

}  // namespace

absl::StatusOr<SyntheticHfSummary> WriteSyntheticHfSource(
    const v1::ModelConfig& config, const std::string& dir, uint64_t seed, ThreadPool* pool,
    const std::function<void(uint64_t, uint64_t)>& on_progress) {
  if (config.architecture() != "llama") {
    return absl::InvalidArgumentError(absl::StrCat("synth --format=hf_fp16: architecture \"",
                                                   config.architecture(), "\" (llama shapes only)"));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  {
    std::ofstream cfg(dir + "/config.json");
    cfg << ConfigJson(config).dump(2) << "\n";
    std::ofstream tok(dir + "/tokenizer.json");
    tok << TokenizerJson(config.vocab_size());
    if (!cfg || !tok) return absl::InternalError(absl::StrCat(dir, ": cannot write config/tokenizer"));
  }
  const std::vector<HfTensor> tensors = Tensors(config);
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t total = 0;
  for (const HfTensor& t : tensors) {
    header[t.name] = {{"dtype", "F16"},
                      {"shape", t.shape},
                      {"data_offsets", {t.offset, t.offset + 2 * t.count()}}};
    total = t.offset + 2 * t.count();
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // data section 8-byte aligned
  const std::string path = dir + "/model.safetensors";
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (file == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path));
  const uint64_t head_size = head.size();
  if (std::fwrite(&head_size, 8, 1, file.get()) != 1 ||
      std::fwrite(head.data(), 1, head.size(), file.get()) != head.size()) {
    return absl::InternalError(absl::StrCat("write ", path));
  }
  // Per tensor, windows of pool-size chunks generated in parallel, then written in order.
  const size_t threads = pool != nullptr ? std::max<size_t>(pool->num_threads(), 1) : 1;
  std::vector<std::vector<uint16_t>> buffers(threads);
  uint64_t written = 0;
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const HfTensor& t = tensors[ti];
    const uint64_t n = t.count();
    const uint64_t tensor_seed = SplitMix64(seed ^ (static_cast<uint64_t>(ti) << 40));
    for (uint64_t base = 0; base < n; base += kChunkValues * threads) {
      auto fill = [&](size_t begin, size_t end) {
        for (size_t b = begin; b < end; ++b) {
          const uint64_t from = base + b * kChunkValues;
          const uint64_t count = from < n ? std::min(kChunkValues, n - from) : 0;
          std::vector<uint16_t>& out = buffers[b];
          out.resize(count);
          for (uint64_t i = 0; i < count; ++i) {
            if (t.half_range == 0.0f) {
              out[i] = F32ToF16(1.0f);
              continue;
            }
            // 24 random bits -> [-1, 1).
            const uint64_t r = SplitMix64(tensor_seed + from + i) >> 40;
            const float u = static_cast<float>(r) * (2.0f / 16777216.0f) - 1.0f;
            out[i] = F32ToF16(u * t.half_range);
          }
        }
      };
      if (pool != nullptr) {
        pool->ParallelFor(0, threads, fill);
      } else {
        fill(0, threads);
      }
      for (const std::vector<uint16_t>& out : buffers) {
        if (out.empty()) continue;
        if (std::fwrite(out.data(), 2, out.size(), file.get()) != out.size()) {
          return absl::InternalError(absl::StrCat("write ", path));
        }
        written += 2 * out.size();
      }
      if (on_progress) on_progress(written, total);
    }
  }
  if (std::fclose(file.release()) != 0) return absl::InternalError(absl::StrCat("close ", path));
  return SyntheticHfSummary{static_cast<int>(tensors.size()), 8 + head_size + total};
}

}  // namespace bitloom::tools
