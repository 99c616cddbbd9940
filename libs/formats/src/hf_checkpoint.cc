// Hugging Face directory -> Checkpoint: config.json (or a multimodal config's text_config) to
// ModelConfig, safetensors tensor names to internal names (tensor_names.h), tokenizer files carried
// verbatim. Weights are memory-mapped and converted to fp32 only when ReadF32 asks; Hugging Face
// already stores the orientation and norm convention the engine expects, so nothing is transformed.
#include "hf_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/safetensors_file.h"
#include "bitloom/formats/tensor_names.h"
#include "model_layout.h"
#include "nlohmann/json.hpp"
#include "sha256.h"

namespace bitloom::formats {
namespace {

using Json = nlohmann::json;

// Bound on the side files read whole (tokenizer.json of a 256k vocabulary is ~35 MB).
constexpr uint64_t kMaxSideFileBytes = uint64_t{512} << 20;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat(path, " not found"));
  if (static_cast<uint64_t>(st.st_size) > kMaxSideFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", kMaxSideFileBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  BITLOOM_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  return j;
}

// Typed optional fields of a JSON object; a present field of the wrong type is an error naming it.
class Fields {
 public:
  Fields(const Json& j, std::string where) : j_(j), where_(std::move(where)) {}

  absl::StatusOr<std::optional<uint64_t>> Uint(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::optional<uint64_t>();
    if (!it->is_number_unsigned()) return Bad(key, "a non-negative integer");
    return std::optional<uint64_t>(it->get<uint64_t>());
  }
  absl::StatusOr<std::optional<double>> Number(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::optional<double>();
    if (!it->is_number()) return Bad(key, "a number");
    return std::optional<double>(it->get<double>());
  }
  absl::StatusOr<std::optional<bool>> Bool(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::optional<bool>();
    if (!it->is_boolean()) return Bad(key, "a bool");
    return std::optional<bool>(it->get<bool>());
  }
  absl::StatusOr<std::optional<std::string>> String(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::optional<std::string>();
    if (!it->is_string()) return Bad(key, "a string");
    return std::optional<std::string>(it->get<std::string>());
  }
  // An integer or a list of integers (token ids).
  absl::StatusOr<std::vector<uint32_t>> Ids(const char* key) const {
    std::vector<uint32_t> out;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return out;
    auto one = [&](const Json& v) -> absl::Status {
      if (!v.is_number_unsigned() || v.get<uint64_t>() > 0xffffffffull) return Bad(key, "token ids");
      out.push_back(static_cast<uint32_t>(v.get<uint64_t>()));
      return absl::OkStatus();
    };
    if (it->is_array()) {
      for (const Json& v : *it) BITLOOM_RETURN_IF_ERROR(one(v));
    } else {
      BITLOOM_RETURN_IF_ERROR(one(*it));
    }
    return out;
  }
  absl::Status Bad(const char* key, absl::string_view want) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": '", key, "' is not ", want));
  }
  const Json& json() const { return j_; }

 private:
  const Json& j_;
  std::string where_;
};

struct SourceTensor {
  const SafetensorsFile* file = nullptr;
  const SafetensorsTensor* tensor = nullptr;
};

class HfCheckpoint : public CheckpointBase {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const override;
  absl::Status ReadF32Into(const std::string& name, absl::Span<float> out) const override;
  absl::StatusOr<std::string> ComputeDigest() const override;

 private:
  absl::Status ReadConfig(const Json& root);
  absl::Status ReadTokenizerFiles();
  absl::Status OpenWeights();
  absl::Status MapTensors();

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;  // sorted by path
  std::vector<SourceTensor> sources_;                    // parallel to tensors_
};

absl::Status HfCheckpoint::ReadConfig(const Json& root) {
  const std::string where = absl::StrCat(dir_, "/config.json");
  Fields top(root, where);
  BITLOOM_ASSIGN_OR_RETURN(auto model_type, top.String("model_type"));
  std::string arch = model_type.value_or("");
  if (arch.empty()) {
    auto a = root.find("architectures");
    if (a != root.end() && a->is_array() && !a->empty() && (*a)[0].is_string()) arch = (*a)[0].get<std::string>();
  }
  // A multimodal Gemma 3 (Gemma3ForConditionalGeneration) keeps the decoder's settings in
  // text_config; the vision tower is ignored.
  const Json* cfg = &root;
  if (arch == "gemma3") {
    auto tc = root.find("text_config");
    if (tc == root.end() || !tc->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": gemma3 config has no text_config"));
    }
    cfg = &*tc;
  } else if (arch == "gemma3_text") {
    arch = "gemma3";
  }
  BITLOOM_RETURN_IF_ERROR(CheckArchitecture(arch, where));
  Fields f(*cfg, where);
  v1::ModelConfig& c = config_;
  c.set_architecture(arch);
  const bool gemma = arch == "gemma3";

  // Gemma3TextConfig's defaults apply where a (multimodal) config leaves fields out.
  auto u = [&](const char* key, uint64_t fallback, bool required) -> absl::StatusOr<uint32_t> {
    BITLOOM_ASSIGN_OR_RETURN(auto v, f.Uint(key));
    if (!v && required && !gemma) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": required '", key, "' is missing"));
    }
    const uint64_t x = v.value_or(fallback);
    if (x > 0xffffffffull) return f.Bad(key, "a 32-bit value");
    return static_cast<uint32_t>(x);
  };
  BITLOOM_ASSIGN_OR_RETURN(uint32_t vocab, u("vocab_size", 262208, true));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t hidden, u("hidden_size", 2304, true));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t inter, u("intermediate_size", 9216, true));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t layers, u("num_hidden_layers", 26, true));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t heads, u("num_attention_heads", 8, true));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t kv, u("num_key_value_heads", gemma ? 4 : heads, false));
  if (heads == 0) return f.Bad("num_attention_heads", "positive");
  BITLOOM_ASSIGN_OR_RETURN(uint32_t head_dim, u("head_dim", gemma ? 256 : hidden / heads, false));
  BITLOOM_ASSIGN_OR_RETURN(uint32_t max_pos, u("max_position_embeddings", gemma ? 131072 : 0, false));
  c.set_vocab_size(vocab);
  c.set_hidden_size(hidden);
  c.set_intermediate_size(inter);
  c.set_num_layers(layers);
  c.set_num_attention_heads(heads);
  c.set_num_key_value_heads(kv);
  c.set_head_dim(head_dim);
  c.set_max_position_embeddings(max_pos);
  BITLOOM_ASSIGN_OR_RETURN(auto eps, f.Number("rms_norm_eps"));
  c.set_rms_norm_eps(static_cast<float>(eps.value_or(1e-6)));
  BITLOOM_ASSIGN_OR_RETURN(auto theta, f.Number("rope_theta"));
  c.set_rope_theta(static_cast<float>(theta.value_or(gemma ? 1e6 : 10000.0)));

  auto rs = cfg->find("rope_scaling");
  if (rs != cfg->end() && !rs->is_null()) {
    if (!rs->is_object()) return f.Bad("rope_scaling", "an object");
    Fields r(*rs, absl::StrCat(where, " rope_scaling"));
    BITLOOM_ASSIGN_OR_RETURN(auto type, r.String("rope_type"));
    if (!type) {
      BITLOOM_ASSIGN_OR_RETURN(type, r.String("type"));
    }
    const std::string t = type.value_or("default");
    if (t != "default") {
      if (t != "linear" && t != "llama3" && t != "yarn") {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": unsupported rope_scaling type '", t, "' (supported: linear, llama3, yarn)"));
      }
      c.set_rope_scaling_type(t);
      BITLOOM_ASSIGN_OR_RETURN(auto factor, r.Number("factor"));
      BITLOOM_ASSIGN_OR_RETURN(auto low, r.Number("low_freq_factor"));
      BITLOOM_ASSIGN_OR_RETURN(auto high, r.Number("high_freq_factor"));
      BITLOOM_ASSIGN_OR_RETURN(auto orig, r.Uint("original_max_position_embeddings"));
      c.set_rope_scaling_factor(static_cast<float>(factor.value_or(1.0)));
      c.set_rope_low_freq_factor(static_cast<float>(low.value_or(0.0)));
      c.set_rope_high_freq_factor(static_cast<float>(high.value_or(0.0)));
      c.set_rope_original_max_position_embeddings(static_cast<uint32_t>(orig.value_or(0)));
    }
  }

  BITLOOM_ASSIGN_OR_RETURN(auto tie, f.Bool("tie_word_embeddings"));
  if (!tie && gemma) {
    BITLOOM_ASSIGN_OR_RETURN(tie, top.Bool("tie_word_embeddings"));
  }
  c.set_tie_word_embeddings(tie.value_or(gemma));
  BITLOOM_ASSIGN_OR_RETURN(auto bias, f.Bool("attention_bias"));
  // Qwen2 always has Q/K/V biases and its config has no attention_bias field.
  c.set_attention_bias(arch == "qwen2" || bias.value_or(false));
  c.set_qk_norm(arch == "qwen3" || gemma);
  c.set_hidden_activation(gemma ? "gelu_tanh" : "silu");

  BITLOOM_ASSIGN_OR_RETURN(auto window, f.Uint("sliding_window"));
  if (gemma) {
    c.set_sliding_window(static_cast<uint32_t>(window.value_or(4096)));
    BITLOOM_ASSIGN_OR_RETURN(auto pattern, f.Uint("sliding_window_pattern"));
    uint32_t every = static_cast<uint32_t>(pattern.value_or(6));
    // Newer configs list layer_types instead; we support the periodic pattern they encode.
    auto lt = cfg->find("layer_types");
    if (lt != cfg->end() && lt->is_array() && !lt->empty()) {
      every = 0;
      for (size_t i = 0; i < lt->size(); ++i) {
        if ((*lt)[i] == "full_attention") { every = static_cast<uint32_t>(i + 1); break; }
      }
      for (size_t i = 0; i < lt->size(); ++i) {
        const bool global = every != 0 && (i + 1) % every == 0;
        if ((*lt)[i] != (global ? "full_attention" : "sliding_attention")) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": layer_types is not a periodic sliding/full pattern (layer ", i, ")"));
        }
      }
    }
    c.set_sliding_window_pattern(every);
    BITLOOM_ASSIGN_OR_RETURN(auto local, f.Number("rope_local_base_freq"));
    c.set_rope_local_theta(static_cast<float>(local.value_or(10000.0)));
    BITLOOM_ASSIGN_OR_RETURN(auto qpas, f.Number("query_pre_attn_scalar"));
    c.set_query_pre_attn_scalar(static_cast<float>(qpas.value_or(256.0)));
    c.set_embedding_scale(std::sqrt(static_cast<float>(hidden)));
    BITLOOM_ASSIGN_OR_RETURN(auto fcap, f.Number("final_logit_softcapping"));
    BITLOOM_ASSIGN_OR_RETURN(auto acap, f.Number("attn_logit_softcapping"));
    c.set_final_logit_softcapping(static_cast<float>(fcap.value_or(0.0)));
    c.set_attn_logit_softcapping(static_cast<float>(acap.value_or(0.0)));
  } else if (arch == "mistral" || (arch == "qwen2" && f.json().value("use_sliding_window", false))) {
    // Every layer slides (Mistral v0.1): sliding_window_pattern 0 means no global layers.
    c.set_sliding_window(static_cast<uint32_t>(window.value_or(0)));
    c.set_sliding_window_pattern(0);
  }

  // Special ids: config.json, then generation_config.json (whose eos list is what generation stops on).
  BITLOOM_ASSIGN_OR_RETURN(std::vector<uint32_t> bos, f.Ids("bos_token_id"));
  if (bos.empty()) {
    BITLOOM_ASSIGN_OR_RETURN(bos, top.Ids("bos_token_id"));
  }
  BITLOOM_ASSIGN_OR_RETURN(std::vector<uint32_t> eos, f.Ids("eos_token_id"));
  if (eos.empty()) {
    BITLOOM_ASSIGN_OR_RETURN(eos, top.Ids("eos_token_id"));
  }
  const std::string gen_path = absl::StrCat(dir_, "/generation_config.json");
  if (Exists(gen_path)) {
    BITLOOM_ASSIGN_OR_RETURN(Json gen, ReadJson(gen_path));
    Fields g(gen, gen_path);
    BITLOOM_ASSIGN_OR_RETURN(std::vector<uint32_t> gbos, g.Ids("bos_token_id"));
    BITLOOM_ASSIGN_OR_RETURN(std::vector<uint32_t> geos, g.Ids("eos_token_id"));
    if (!gbos.empty()) bos = gbos;
    for (uint32_t x : eos) {
      if (std::find(geos.begin(), geos.end(), x) == geos.end()) geos.push_back(x);
    }
    if (!geos.empty()) eos = geos;
  }
  for (uint32_t x : bos) c.add_bos_token_ids(x);
  for (uint32_t x : eos) c.add_eos_token_ids(x);
  return absl::OkStatus();
}

absl::Status HfCheckpoint::ReadTokenizerFiles() {
  const std::string tok = absl::StrCat(dir_, "/tokenizer.json");
  if (!Exists(tok)) {
    return absl::NotFoundError(absl::StrCat(dir_, ": no tokenizer.json (a SentencePiece-only "
                                                  "tokenizer.model is not supported)"));
  }
  BITLOOM_ASSIGN_OR_RETURN(*tokenizer_.mutable_hf_json(), ReadSmallFile(tok));
  const std::string tc = absl::StrCat(dir_, "/tokenizer_config.json");
  if (Exists(tc)) {
    BITLOOM_ASSIGN_OR_RETURN(*tokenizer_.mutable_hf_config_json(), ReadSmallFile(tc));
    Json j = Json::parse(tokenizer_.hf_config_json(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(tc, " is not a JSON object"));
    }
    auto ct = j.find("chat_template");
    if (ct != j.end() && ct->is_string()) {
      chat_template_ = ct->get<std::string>();
    } else if (ct != j.end() && ct->is_array()) {
      // A list of named templates: the "default" one is what apply_chat_template uses.
      for (const Json& t : *ct) {
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string()) {
          chat_template_ = t["template"].get<std::string>();
        }
      }
    }
  }
  // Newer exports keep the template in its own file, which then takes precedence.
  const std::string jinja = absl::StrCat(dir_, "/chat_template.jinja");
  if (Exists(jinja)) {
    BITLOOM_ASSIGN_OR_RETURN(chat_template_, ReadSmallFile(jinja));
  }
  return absl::OkStatus();
}

absl::Status HfCheckpoint::OpenWeights() {
  std::vector<std::string> names;
  const std::string index = absl::StrCat(dir_, "/model.safetensors.index.json");
  if (Exists(index)) {
    BITLOOM_ASSIGN_OR_RETURN(Json j, ReadJson(index));
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index, ": no weight_map object"));
    }
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index, ": weight_map['", it.key(), "'] is not a string"));
      }
      const std::string file = it.value().get<std::string>();
      // Shards live in the directory itself; a path could point anywhere.
      if (file.empty() || absl::StrContains(file, "/") || file == "." || file == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index, ": invalid shard name '", file, "'"));
      }
      if (std::find(names.begin(), names.end(), file) == names.end()) names.push_back(file);
    }
  } else if (Exists(absl::StrCat(dir_, "/model.safetensors"))) {
    names.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir_, ": no model.safetensors or model.safetensors.index.json (only safetensors weights are read)"));
  }
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    BITLOOM_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(absl::StrCat(dir_, "/", n)));
    files_.push_back(std::move(f));
  }
  return absl::OkStatus();
}

// Hugging Face per-layer suffix -> internal suffix. post_attention_layernorm is Llama's pre-MLP norm
// but Gemma's post-attention norm; it is handled separately.
struct NamePair {
  const char* hf;
  const char* internal;
};
constexpr NamePair kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn.q_proj.weight"},
    {"self_attn.k_proj.weight", "attn.k_proj.weight"},
    {"self_attn.v_proj.weight", "attn.v_proj.weight"},
    {"self_attn.o_proj.weight", "attn.o_proj.weight"},
    {"self_attn.q_proj.bias", "attn.q_proj.bias"},
    {"self_attn.k_proj.bias", "attn.k_proj.bias"},
    {"self_attn.v_proj.bias", "attn.v_proj.bias"},
    {"self_attn.q_norm.weight", "attn.q_norm.weight"},
    {"self_attn.k_norm.weight", "attn.k_norm.weight"},
    {"pre_feedforward_layernorm.weight", "mlp_norm.weight"},
    {"post_feedforward_layernorm.weight", "post_mlp_norm.weight"},
    {"mlp.gate_proj.weight", "mlp.gate_proj.weight"},
    {"mlp.up_proj.weight", "mlp.up_proj.weight"},
    {"mlp.down_proj.weight", "mlp.down_proj.weight"},
};

absl::Status HfCheckpoint::MapTensors() {
  const bool gemma = config_.architecture() == "gemma3";
  for (const auto& file : files_) {
    for (const SafetensorsTensor& t : file->tensors()) {
      std::string name = t.name;
      // Multimodal Gemma 3 prefixes (older and newer transformers); the vision side is skipped.
      if (absl::StartsWith(name, "vision_tower.") || absl::StartsWith(name, "multi_modal_projector.") ||
          absl::StartsWith(name, "model.vision_tower.") ||
          absl::StartsWith(name, "model.multi_modal_projector.") || absl::EndsWith(name, ".inv_freq")) {
        continue;
      }
      if (absl::StartsWith(name, "language_model.model.")) name = name.substr(strlen("language_model."));
      else if (absl::StartsWith(name, "model.language_model.")) name = "model." + name.substr(strlen("model.language_model."));
      else if (absl::StartsWith(name, "language_model.lm_head.")) name = name.substr(strlen("language_model."));
      std::string internal;
      if (name == "model.embed_tokens.weight") {
        internal = kEmbedTokens;
      } else if (name == "model.norm.weight") {
        internal = kFinalNorm;
      } else if (name == "lm_head.weight") {
        if (config_.tie_word_embeddings()) continue;  // unused when tied, as in transformers
        internal = kLmHead;
      } else if (absl::StartsWith(name, "model.layers.")) {
        std::vector<absl::string_view> parts = absl::StrSplit(name, absl::MaxSplits('.', 3));
        int layer = -1;
        if (parts.size() != 4 || !absl::SimpleAtoi(parts[2], &layer) || layer < 0 ||
            static_cast<uint32_t>(layer) >= config_.num_layers()) {
          return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", t.name,
                                                         "' names no layer in [0, ",
                                                         config_.num_layers(), ")"));
        }
        if (parts[3] == "post_attention_layernorm.weight") {
          internal = LayerTensor(layer, gemma ? "post_attn_norm.weight" : "mlp_norm.weight");
        }
        for (const NamePair& np : kLayerNames) {
          if (parts[3] == np.hf) internal = LayerTensor(layer, np.internal);
        }
      }
      if (internal.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(file->path(), ": unexpected tensor '", t.name,
                                                       "' for architecture '",
                                                       config_.architecture(), "'"));
      }
      if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16") {
        return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", t.name, "' has dtype ",
                                                       t.dtype, " (supported: F32, F16, BF16)"));
      }
      tensors_.push_back({internal, t.shape, t.dtype});
      sources_.push_back({file.get(), &t});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> HfCheckpoint::Open(const std::string& dir) {
  std::unique_ptr<HfCheckpoint> ckpt(new HfCheckpoint());
  ckpt->dir_ = dir;
  while (ckpt->dir_.size() > 1 && ckpt->dir_.back() == '/') ckpt->dir_.pop_back();
  ckpt->source_.set_location(dir);
  ckpt->source_.set_kind("hf");
  const std::string config_path = absl::StrCat(ckpt->dir_, "/config.json");
  if (!Exists(config_path)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no config.json (not a Hugging Face model directory)"));
  }
  BITLOOM_ASSIGN_OR_RETURN(Json root, ReadJson(config_path));
  absl::Status s;
  try {  // every JSON access is type-checked; this only guards the library boundary
    s = ckpt->ReadConfig(root);
  } catch (const std::exception& e) {
    s = absl::InvalidArgumentError(absl::StrCat(config_path, ": ", e.what()));
  }
  BITLOOM_RETURN_IF_ERROR(s);
  BITLOOM_RETURN_IF_ERROR(ValidateConfig(ckpt->config_, config_path));
  BITLOOM_RETURN_IF_ERROR(ckpt->ReadTokenizerFiles());
  BITLOOM_RETURN_IF_ERROR(ckpt->OpenWeights());
  BITLOOM_RETURN_IF_ERROR(ckpt->MapTensors());
  BITLOOM_RETURN_IF_ERROR(ckpt->FinishAndValidate(ckpt->dir_));
  return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

absl::StatusOr<std::vector<float>> HfCheckpoint::ReadF32(const std::string& name) const {
  const CheckpointTensor* t = FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(dir_, ": no tensor '", name, "'"));
  std::vector<float> out(sources_[t - tensors_.data()].tensor->num_elements);
  BITLOOM_RETURN_IF_ERROR(ReadF32Into(name, absl::MakeSpan(out)));
  return out;
}

absl::Status HfCheckpoint::ReadF32Into(const std::string& name, absl::Span<float> out) const {
  const CheckpointTensor* t = FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(dir_, ": no tensor '", name, "'"));
  const SourceTensor& s = sources_[t - tensors_.data()];
  return s.file->ReadF32(*s.tensor, out);
}

absl::StatusOr<std::string> HfCheckpoint::ComputeDigest() const {
  BITLOOM_ASSIGN_OR_RETURN(Sha256 sha, Sha256::Create());
  for (const auto& f : files_) {  // sorted by name
    BITLOOM_RETURN_IF_ERROR(sha.UpdateFromFile(f->path()));
  }
  return sha.FinishHex();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& dir) {
  return HfCheckpoint::Open(dir);
}

}  // namespace bitloom::formats
