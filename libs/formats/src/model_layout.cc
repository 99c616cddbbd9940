#include "model_layout.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bitloom/formats/tensor_names.h"

namespace bitloom::formats {
namespace {

// Generous bounds that no real decoder reaches; they keep a corrupt config from driving huge
// allocations downstream (KV caches, rotary tables).
constexpr uint32_t kMaxLayers = 1024;
constexpr uint32_t kMaxHeads = 4096;
constexpr uint32_t kMaxHeadDim = 1024;
constexpr uint32_t kMaxHidden = 1u << 17;
constexpr uint32_t kMaxIntermediate = 1u << 20;
constexpr uint32_t kMaxVocab = 1u << 24;

}  // namespace

const std::vector<std::string>& SupportedArchitectures() {
  static const std::vector<std::string> kArchs = {"llama", "mistral", "qwen2", "qwen3", "gemma3"};
  return kArchs;
}

absl::Status CheckArchitecture(absl::string_view architecture, absl::string_view what) {
  for (const std::string& a : SupportedArchitectures()) {
    if (a == architecture) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported architecture '", architecture,
                                                 "' (supported: ",
                                                 absl::StrJoin(SupportedArchitectures(), ", "), ")"));
}

absl::Status ValidateConfig(const v1::ModelConfig& c, absl::string_view where) {
  auto bad = [&](absl::string_view field, uint64_t value, absl::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", field, " = ", value, " ", rule));
  };
  auto range = [&](absl::string_view field, uint64_t value, uint64_t max) -> absl::Status {
    if (value == 0 || value > max) return bad(field, value, absl::StrCat("is not in [1, ", max, "]"));
    return absl::OkStatus();
  };
  if (auto s = range("vocab_size", c.vocab_size(), kMaxVocab); !s.ok()) return s;
  if (auto s = range("hidden_size", c.hidden_size(), kMaxHidden); !s.ok()) return s;
  if (auto s = range("intermediate_size", c.intermediate_size(), kMaxIntermediate); !s.ok()) return s;
  if (auto s = range("num_layers", c.num_layers(), kMaxLayers); !s.ok()) return s;
  if (auto s = range("num_attention_heads", c.num_attention_heads(), kMaxHeads); !s.ok()) return s;
  if (auto s = range("num_key_value_heads", c.num_key_value_heads(), kMaxHeads); !s.ok()) return s;
  if (auto s = range("head_dim", c.head_dim(), kMaxHeadDim); !s.ok()) return s;
  if (c.num_attention_heads() % c.num_key_value_heads() != 0) {
    return bad("num_attention_heads", c.num_attention_heads(),
               absl::StrCat("is not a multiple of num_key_value_heads = ", c.num_key_value_heads()));
  }
  if (c.head_dim() % 2 != 0) return bad("head_dim", c.head_dim(), "is odd (rotary needs pairs)");
  if (!(c.rms_norm_eps() > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": rms_norm_eps = ", c.rms_norm_eps(),
                                                   " is not positive"));
  }
  if (!(c.rope_theta() > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": rope_theta = ", c.rope_theta(),
                                                   " is not positive"));
  }
  return absl::OkStatus();
}

std::vector<ExpectedTensor> ExpectedTensors(const v1::ModelConfig& c) {
  const uint64_t hidden = c.hidden_size(), inter = c.intermediate_size();
  const uint64_t q_out = uint64_t{c.num_attention_heads()} * c.head_dim();
  const uint64_t kv_out = uint64_t{c.num_key_value_heads()} * c.head_dim();
  const bool gemma = c.architecture() == "gemma3";
  std::vector<ExpectedTensor> out = {{kEmbedTokens, {c.vocab_size(), hidden}}, {kFinalNorm, {hidden}}};
  if (!c.tie_word_embeddings()) out.push_back({kLmHead, {c.vocab_size(), hidden}});
  for (int i = 0; i < static_cast<int>(c.num_layers()); ++i) {
    auto add = [&](const char* suffix, std::vector<uint64_t> shape) {
      out.push_back({LayerTensor(i, suffix), std::move(shape)});
    };
    add("attn_norm.weight", {hidden});
    add("attn.q_proj.weight", {q_out, hidden});
    add("attn.k_proj.weight", {kv_out, hidden});
    add("attn.v_proj.weight", {kv_out, hidden});
    add("attn.o_proj.weight", {hidden, q_out});
    if (c.attention_bias()) {
      add("attn.q_proj.bias", {q_out});
      add("attn.k_proj.bias", {kv_out});
      add("attn.v_proj.bias", {kv_out});
    }
    if (c.qk_norm()) {
      add("attn.q_norm.weight", {c.head_dim()});
      add("attn.k_norm.weight", {c.head_dim()});
    }
    add("mlp_norm.weight", {hidden});
    if (gemma) {
      add("post_attn_norm.weight", {hidden});
      add("post_mlp_norm.weight", {hidden});
    }
    add("mlp.gate_proj.weight", {inter, hidden});
    add("mlp.up_proj.weight", {inter, hidden});
    add("mlp.down_proj.weight", {hidden, inter});
  }
  return out;
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

const CheckpointTensor* CheckpointBase::FindTensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status CheckpointBase::FinishAndValidate(absl::string_view where) {
  index_.clear();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (!index_.emplace(tensors_[i].name, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": two source tensors map to '", tensors_[i].name, "'"));
    }
  }
  for (const ExpectedTensor& e : ExpectedTensors(config_)) {
    const CheckpointTensor* t = FindTensor(e.name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(where, ": missing tensor '", e.name, "' (",
                                              config_.architecture(), " with ", config_.num_layers(),
                                              " layers needs it)"));
    }
    if (t->shape != e.shape) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", e.name, "' has shape ",
                                                     ShapeString(t->shape), ", config implies ",
                                                     ShapeString(e.shape)));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::formats
