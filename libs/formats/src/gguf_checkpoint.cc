// GGUF -> Checkpoint: maps `<arch>.*` and `tokenizer.ggml.*` metadata to ModelConfig and
// GgufTokenizer, GGUF tensor names to internal names (tensor_names.h), and undoes two transforms
// llama.cpp's converter applies (docs/GGUF.md, "From GGUF to Hugging Face semantics"):
//  - Llama-family attn_q / attn_k rows are permuted from Hugging Face's half-split rotary layout to
//    interleaved pairs; ReadF32 permutes them back.
//  - Gemma 3 norm weights are stored as 1 + w; ReadF32 returns w.
#include "gguf_checkpoint.h"

#include <cmath>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/gguf_file.h"
#include "bitloom/formats/tensor_names.h"
#include "model_layout.h"
#include "sha256.h"

namespace bitloom::formats {
namespace {

// How a GGUF tensor's values become the Hugging Face values.
enum class Transform {
  kNone,
  // Rows were permuted per head for rotary embeddings (llama.cpp LlamaModel.permute); undo it.
  kUnpermuteRows,
  // Gemma norm weights were stored as 1 + w.
  kMinusOne,
};

struct SourceTensor {
  const GgufTensorInfo* info = nullptr;
  Transform transform = Transform::kNone;
  uint32_t heads = 0;  // for kUnpermuteRows: the number of heads the rows are grouped in
};

// Per-layer tensor names: GGUF suffix after "blk.N." -> internal suffix after "layers.N.".
struct NamePair {
  const char* gguf;
  const char* internal;
};
constexpr NamePair kLayerNames[] = {
    {"attn_norm.weight", "attn_norm.weight"},
    {"attn_q.weight", "attn.q_proj.weight"},
    {"attn_k.weight", "attn.k_proj.weight"},
    {"attn_v.weight", "attn.v_proj.weight"},
    {"attn_output.weight", "attn.o_proj.weight"},
    {"attn_q.bias", "attn.q_proj.bias"},
    {"attn_k.bias", "attn.k_proj.bias"},
    {"attn_v.bias", "attn.v_proj.bias"},
    {"attn_q_norm.weight", "attn.q_norm.weight"},
    {"attn_k_norm.weight", "attn.k_norm.weight"},
    // Llama's post_attention_layernorm and Gemma's pre_feedforward_layernorm both become ffn_norm.
    {"ffn_norm.weight", "mlp_norm.weight"},
    {"post_attention_norm.weight", "post_attn_norm.weight"},
    {"post_ffw_norm.weight", "post_mlp_norm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// Token texts that end a turn in the chat formats of the supported families. GGUF files often carry
// only tokenizer.ggml.eos_token_id (the base model's end of text); Hugging Face's
// generation_config.json lists these as additional stop ids, and llama.cpp also treats them as
// end-of-generation when they are control tokens.
constexpr const char* kEndOfTurnTexts[] = {"<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>"};
constexpr int32_t kTokenTypeControl = 3;

class GgufCheckpoint : public CheckpointBase {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const override;
  absl::Status ReadF32Into(const std::string& name, absl::Span<float> out) const override;
  absl::StatusOr<std::string> ComputeDigest() const override;

 private:
  absl::Status ReadConfig();
  absl::Status ReadTokenizer();
  absl::Status MapTensors();

  // Typed metadata access under "<arch>." with the key named in errors.
  absl::StatusOr<std::optional<uint64_t>> OptUint(absl::string_view key) const;
  absl::StatusOr<uint64_t> ReqUint(absl::string_view key) const;
  absl::StatusOr<std::optional<double>> OptDouble(absl::string_view key) const;
  absl::Status Invalid(absl::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat("GGUF file ", file_->path(), ": ", msg));
  }

  std::unique_ptr<GgufFile> file_;
  std::string arch_;  // GGUF general.architecture
  std::vector<SourceTensor> sources_;  // parallel to tensors_
};

absl::StatusOr<std::optional<uint64_t>> GgufCheckpoint::OptUint(absl::string_view key) const {
  const GgufValue* v = file_->Find(key);
  if (v == nullptr) return std::optional<uint64_t>();
  if (v->is_array()) {
    // Some converters write per-layer hyperparameters as arrays; we support uniform ones only.
    auto values = v->AsIntArray();
    if (!values.ok() || values->empty()) {
      return Invalid(absl::StrCat("metadata '", key, "' is an array of non-integers or empty"));
    }
    for (int64_t x : *values) {
      if (x != (*values)[0] || x < 0) {
        return Invalid(absl::StrCat("metadata '", key,
                                    "' varies per layer, which is not supported"));
      }
    }
    return std::optional<uint64_t>(static_cast<uint64_t>((*values)[0]));
  }
  auto u = v->AsUint();
  if (!u.ok()) return Invalid(absl::StrCat("metadata '", key, "': ", u.status().message()));
  return std::optional<uint64_t>(*u);
}

absl::StatusOr<uint64_t> GgufCheckpoint::ReqUint(absl::string_view key) const {
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> v, OptUint(key));
  if (!v) return Invalid(absl::StrCat("required metadata '", key, "' is missing"));
  return *v;
}

absl::StatusOr<std::optional<double>> GgufCheckpoint::OptDouble(absl::string_view key) const {
  const GgufValue* v = file_->Find(key);
  if (v == nullptr) return std::optional<double>();
  auto d = v->AsDouble();
  if (!d.ok()) return Invalid(absl::StrCat("metadata '", key, "': ", d.status().message()));
  return std::optional<double>(*d);
}

absl::Status FitsU32(uint64_t v, absl::string_view key, const std::string& path) {
  if (v > 0xffffffffull) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF file ", path, ": metadata '", key, "' = ", v, " does not fit 32 bits"));
  }
  return absl::OkStatus();
}

absl::Status GgufCheckpoint::ReadConfig() {
  auto arch_or = file_->GetString("general.architecture");
  if (!arch_or.ok()) return Invalid(arch_or.status().message());
  arch_ = std::string(*arch_or);
  BITLOOM_RETURN_IF_ERROR(CheckArchitecture(arch_, absl::StrCat("GGUF file ", file_->path())));
  const std::string p = arch_ + ".";
  v1::ModelConfig& c = config_;
  // llama.cpp writes Mistral models as "llama" (same graph); "mistral" GGUFs are read the same way.
  c.set_architecture(arch_);

  auto u32 = [&](absl::string_view key, uint64_t v, auto setter) -> absl::Status {
    BITLOOM_RETURN_IF_ERROR(FitsU32(v, key, file_->path()));
    (c.*setter)(static_cast<uint32_t>(v));
    return absl::OkStatus();
  };
  BITLOOM_ASSIGN_OR_RETURN(uint64_t hidden, ReqUint(p + "embedding_length"));
  BITLOOM_RETURN_IF_ERROR(u32("embedding_length", hidden, &v1::ModelConfig::set_hidden_size));
  BITLOOM_ASSIGN_OR_RETURN(uint64_t ffn, ReqUint(p + "feed_forward_length"));
  BITLOOM_RETURN_IF_ERROR(u32("feed_forward_length", ffn, &v1::ModelConfig::set_intermediate_size));
  BITLOOM_ASSIGN_OR_RETURN(uint64_t layers, ReqUint(p + "block_count"));
  BITLOOM_RETURN_IF_ERROR(u32("block_count", layers, &v1::ModelConfig::set_num_layers));
  BITLOOM_ASSIGN_OR_RETURN(uint64_t heads, ReqUint(p + "attention.head_count"));
  BITLOOM_RETURN_IF_ERROR(u32("attention.head_count", heads, &v1::ModelConfig::set_num_attention_heads));
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> kv, OptUint(p + "attention.head_count_kv"));
  BITLOOM_RETURN_IF_ERROR(
      u32("attention.head_count_kv", kv.value_or(heads), &v1::ModelConfig::set_num_key_value_heads));
  if (heads == 0) return Invalid("attention.head_count is 0");
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> key_len, OptUint(p + "attention.key_length"));
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> value_len, OptUint(p + "attention.value_length"));
  const uint64_t head_dim = key_len.value_or(hidden / heads);
  if (value_len && *value_len != head_dim) {
    return Invalid(absl::StrCat("attention.value_length ", *value_len, " differs from key_length ",
                                head_dim, " (not supported)"));
  }
  BITLOOM_RETURN_IF_ERROR(u32("attention.key_length", head_dim, &v1::ModelConfig::set_head_dim));
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> rope_dims, OptUint(p + "rope.dimension_count"));
  if (rope_dims && *rope_dims != head_dim) {
    return Invalid(absl::StrCat("rope.dimension_count ", *rope_dims, " differs from head_dim ",
                                head_dim, ": partial rotary embeddings are not supported"));
  }
  BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> ctx, OptUint(p + "context_length"));
  BITLOOM_RETURN_IF_ERROR(
      u32("context_length", ctx.value_or(0), &v1::ModelConfig::set_max_position_embeddings));
  BITLOOM_ASSIGN_OR_RETURN(std::optional<double> eps, OptDouble(p + "attention.layer_norm_rms_epsilon"));
  if (!eps) return Invalid(absl::StrCat("required metadata '", p, "attention.layer_norm_rms_epsilon' is missing"));
  c.set_rms_norm_eps(static_cast<float>(*eps));
  BITLOOM_ASSIGN_OR_RETURN(std::optional<double> theta, OptDouble(p + "rope.freq_base"));
  c.set_rope_theta(static_cast<float>(theta.value_or(10000.0)));

  if (const GgufValue* st = file_->Find(p + "rope.scaling.type")) {
    auto type = st->AsString();
    if (!type.ok()) return Invalid(absl::StrCat(p, "rope.scaling.type: ", type.status().message()));
    if (*type != "none") {
      if (*type != "linear" && *type != "yarn") {
        return Invalid(absl::StrCat("unsupported rope.scaling.type '", *type, "' (supported: none, linear, yarn)"));
      }
      c.set_rope_scaling_type(std::string(*type));
      BITLOOM_ASSIGN_OR_RETURN(std::optional<double> factor, OptDouble(p + "rope.scaling.factor"));
      c.set_rope_scaling_factor(static_cast<float>(factor.value_or(1.0)));
      BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> orig,
                               OptUint(p + "rope.scaling.original_context_length"));
      BITLOOM_RETURN_IF_ERROR(u32("rope.scaling.original_context_length", orig.value_or(0),
                                  &v1::ModelConfig::set_rope_original_max_position_embeddings));
    }
  }

  c.set_hidden_activation("silu");
  if (arch_ == "gemma3") {
    // Values llama.cpp hard-codes for Gemma 3 when the file does not carry them (docs/GGUF.md).
    c.set_hidden_activation("gelu_tanh");
    c.set_embedding_scale(std::sqrt(static_cast<float>(hidden)));
    BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> window, OptUint(p + "attention.sliding_window"));
    BITLOOM_RETURN_IF_ERROR(u32("attention.sliding_window", window.value_or(0),
                                &v1::ModelConfig::set_sliding_window));
    c.set_sliding_window_pattern(6);
    if (const GgufValue* pat = file_->Find(p + "attention.sliding_window_pattern"); pat && !pat->is_array()) {
      auto v = pat->AsUint();
      if (!v.ok() || *v == 0 || *v > layers) return Invalid("attention.sliding_window_pattern is invalid");
      c.set_sliding_window_pattern(static_cast<uint32_t>(*v));
    }
    BITLOOM_ASSIGN_OR_RETURN(std::optional<double> local, OptDouble(p + "rope.freq_base_swa"));
    c.set_rope_local_theta(static_cast<float>(local.value_or(10000.0)));
    // Gemma 3 27B scales queries by hidden / heads, the smaller models by head_dim (as in their
    // config.json query_pre_attn_scalar; llama.cpp decides by the 62-layer 27B size).
    c.set_query_pre_attn_scalar(layers == 62 ? static_cast<float>(hidden / heads)
                                             : static_cast<float>(head_dim));
    BITLOOM_ASSIGN_OR_RETURN(std::optional<double> final_cap, OptDouble(p + "final_logit_softcapping"));
    c.set_final_logit_softcapping(static_cast<float>(final_cap.value_or(0.0)));
    BITLOOM_ASSIGN_OR_RETURN(std::optional<double> attn_cap, OptDouble(p + "attn_logit_softcapping"));
    c.set_attn_logit_softcapping(static_cast<float>(attn_cap.value_or(0.0)));
  }
  return absl::OkStatus();
}

absl::Status GgufCheckpoint::ReadTokenizer() {
  v1::GgufTokenizer& t = *tokenizer_.mutable_gguf();
  auto str = [&](absl::string_view key, std::string* out) -> absl::Status {
    const GgufValue* v = file_->Find(key);
    if (v == nullptr) return absl::OkStatus();
    auto s = v->AsString();
    if (!s.ok()) return Invalid(absl::StrCat("metadata '", key, "': ", s.status().message()));
    *out = std::string(*s);
    return absl::OkStatus();
  };
  std::string model;
  BITLOOM_RETURN_IF_ERROR(str("tokenizer.ggml.model", &model));
  if (model.empty()) return Invalid("no tokenizer (tokenizer.ggml.model is missing)");
  t.set_model(model);
  BITLOOM_RETURN_IF_ERROR(str("tokenizer.ggml.pre", t.mutable_pre()));
  BITLOOM_RETURN_IF_ERROR(str("tokenizer.chat_template", &chat_template_));

  const GgufValue* tokens = file_->Find("tokenizer.ggml.tokens");
  if (tokens == nullptr) return Invalid("tokenizer.ggml.tokens is missing");
  auto token_list = tokens->AsStringArray();
  if (!token_list.ok()) return Invalid(absl::StrCat("tokenizer.ggml.tokens: ", token_list.status().message()));
  t.mutable_tokens()->Reserve(static_cast<int>(token_list->size()));
  for (absl::string_view s : *token_list) t.add_tokens(std::string(s));
  const size_t n = token_list->size();

  if (const GgufValue* v = file_->Find("tokenizer.ggml.scores")) {
    auto scores = v->AsDoubleArray();
    if (!scores.ok() || scores->size() != n) {
      return Invalid(absl::StrCat("tokenizer.ggml.scores must be ", n, " numbers"));
    }
    for (double d : *scores) t.add_scores(static_cast<float>(d));
  }
  if (const GgufValue* v = file_->Find("tokenizer.ggml.token_type")) {
    auto types = v->AsIntArray();
    if (!types.ok() || types->size() != n) {
      return Invalid(absl::StrCat("tokenizer.ggml.token_type must be ", n, " integers"));
    }
    for (int64_t x : *types) t.add_token_types(static_cast<int32_t>(x));
  }
  if (const GgufValue* v = file_->Find("tokenizer.ggml.merges")) {
    auto merges = v->AsStringArray();
    if (!merges.ok()) return Invalid(absl::StrCat("tokenizer.ggml.merges: ", merges.status().message()));
    for (absl::string_view s : *merges) t.add_merges(std::string(s));
  }
  auto id = [&](absl::string_view key) -> absl::StatusOr<std::optional<uint32_t>> {
    BITLOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> v, OptUint(key));
    if (!v) return std::optional<uint32_t>();
    if (*v >= n) return Invalid(absl::StrCat(key, " = ", *v, " is not below the vocabulary size ", n));
    return std::optional<uint32_t>(static_cast<uint32_t>(*v));
  };
  BITLOOM_ASSIGN_OR_RETURN(auto bos, id("tokenizer.ggml.bos_token_id"));
  BITLOOM_ASSIGN_OR_RETURN(auto eos, id("tokenizer.ggml.eos_token_id"));
  BITLOOM_ASSIGN_OR_RETURN(auto unk, id("tokenizer.ggml.unknown_token_id"));
  BITLOOM_ASSIGN_OR_RETURN(auto pad, id("tokenizer.ggml.padding_token_id"));
  BITLOOM_ASSIGN_OR_RETURN(auto eot, id("tokenizer.ggml.eot_token_id"));
  BITLOOM_ASSIGN_OR_RETURN(auto eom, id("tokenizer.ggml.eom_token_id"));
  if (bos) t.set_bos_token_id(*bos);
  if (eos) t.set_eos_token_id(*eos);
  if (unk) t.set_unknown_token_id(*unk);
  if (pad) t.set_padding_token_id(*pad);
  auto flag = [&](absl::string_view key, void (v1::GgufTokenizer::*setter)(bool)) -> absl::Status {
    if (file_->Find(key) == nullptr) return absl::OkStatus();
    auto b = file_->GetBool(key);
    if (!b.ok()) return Invalid(b.status().message());
    (t.*setter)(*b);
    return absl::OkStatus();
  };
  BITLOOM_RETURN_IF_ERROR(flag("tokenizer.ggml.add_bos_token", &v1::GgufTokenizer::set_add_bos_token));
  BITLOOM_RETURN_IF_ERROR(flag("tokenizer.ggml.add_eos_token", &v1::GgufTokenizer::set_add_eos_token));
  BITLOOM_RETURN_IF_ERROR(
      flag("tokenizer.ggml.add_space_prefix", &v1::GgufTokenizer::set_add_space_prefix));

  // End-of-turn ids: explicit metadata first, then control tokens with a known end-of-turn text.
  std::vector<uint32_t> eot_ids;
  auto add_unique = [](std::vector<uint32_t>* v, uint32_t x) {
    for (uint32_t y : *v) {
      if (y == x) return;
    }
    v->push_back(x);
  };
  if (eot) add_unique(&eot_ids, *eot);
  if (eom) add_unique(&eot_ids, *eom);
  for (size_t i = 0; i < n; ++i) {
    const bool control = t.token_types_size() == static_cast<int>(n) &&
                         t.token_types(static_cast<int>(i)) == kTokenTypeControl;
    if (!control) continue;
    for (const char* text : kEndOfTurnTexts) {
      if ((*token_list)[i] == text) add_unique(&eot_ids, static_cast<uint32_t>(i));
    }
  }
  for (uint32_t x : eot_ids) t.add_eot_token_ids(x);

  if (bos) config_.add_bos_token_ids(*bos);
  std::vector<uint32_t> stop;
  if (eos) add_unique(&stop, *eos);
  for (uint32_t x : eot_ids) add_unique(&stop, x);
  for (uint32_t x : stop) config_.add_eos_token_ids(x);
  return absl::OkStatus();
}

absl::Status GgufCheckpoint::MapTensors() {
  v1::ModelConfig& c = config_;
  // Llama-family GGUFs (llama.cpp's LlamaModel converter, which Mistral's also uses) have permuted
  // Q/K rows; Qwen2/Qwen3 and Gemma 3 converters do not permute.
  const bool permuted = arch_ == "llama" || arch_ == "mistral";
  const bool gemma = arch_ == "gemma3";
  uint64_t vocab = 0;
  bool has_output = false, has_bias = false, has_qk_norm = false;
  for (const GgufTensorInfo& info : file_->tensors()) {
    std::vector<uint64_t> shape(info.ne.rbegin(), info.ne.rend());
    std::string internal;
    SourceTensor src{&info, Transform::kNone, 0};
    if (info.name == "token_embd.weight") {
      internal = kEmbedTokens;
      vocab = shape[0];
    } else if (info.name == "output_norm.weight") {
      internal = kFinalNorm;
    } else if (info.name == "output.weight") {
      internal = kLmHead;
      has_output = true;
    } else if (info.name == "rope_freqs.weight") {
      // Llama 3.1-style RoPE scaling stored as per-frequency factors (docs/GGUF.md).
      return absl::UnimplementedError(absl::StrCat(
          "GGUF file ", file_->path(),
          ": rope_freqs.weight (Llama 3.1 RoPE scaling as a tensor) is not supported yet; read the "
          "Hugging Face checkpoint instead"));
    } else if (absl::StartsWith(info.name, "blk.")) {
      std::vector<absl::string_view> parts = absl::StrSplit(info.name, absl::MaxSplits('.', 2));
      int layer = -1;
      if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &layer) || layer < 0 ||
          static_cast<uint64_t>(layer) >= c.num_layers()) {
        return Invalid(absl::StrCat("tensor '", info.name, "' names no layer in [0, ", c.num_layers(), ")"));
      }
      for (const NamePair& np : kLayerNames) {
        if (parts[2] == np.gguf) internal = LayerTensor(layer, np.internal);
      }
      if (internal.empty()) {
        // llama.cpp's legacy precomputed rotary table carries no weights.
        if (parts[2] == "attn_rot_embd") continue;
        return Invalid(absl::StrCat("unexpected tensor '", info.name, "' for architecture '", arch_, "'"));
      }
      if (parts[2] == "attn_q.bias") has_bias = true;
      if (parts[2] == "attn_q_norm.weight") has_qk_norm = true;
      if (permuted && (parts[2] == "attn_q.weight" || parts[2] == "attn_q.bias")) {
        src.transform = Transform::kUnpermuteRows;
        src.heads = c.num_attention_heads();
      } else if (permuted && (parts[2] == "attn_k.weight" || parts[2] == "attn_k.bias")) {
        src.transform = Transform::kUnpermuteRows;
        src.heads = c.num_key_value_heads();
      }
    } else {
      return Invalid(absl::StrCat("unexpected tensor '", info.name, "' for architecture '", arch_, "'"));
    }
    if (gemma && absl::EndsWith(info.name, "norm.weight")) src.transform = Transform::kMinusOne;
    if (src.transform != Transform::kNone && !GetGgmlTypeTraits(info.type).can_dequantize) {
      return Invalid(absl::StrCat("tensor '", info.name, "' of type ", GetGgmlTypeTraits(info.type).name,
                                  " cannot be decoded"));
    }
    tensors_.push_back({internal, std::move(shape), std::string(GetGgmlTypeTraits(info.type).name)});
    sources_.push_back(src);
  }
  if (vocab == 0) return absl::NotFoundError(absl::StrCat("GGUF file ", file_->path(), ": missing tensor 'token_embd.weight'"));
  if (vocab > 0xffffffffull) return Invalid("token_embd.weight has too many rows");
  c.set_vocab_size(static_cast<uint32_t>(vocab));
  c.set_tie_word_embeddings(!has_output);
  c.set_attention_bias(has_bias);
  c.set_qk_norm(has_qk_norm);
  if (gemma && !has_qk_norm) return Invalid("gemma3 model without attn_q_norm tensors");
  if (tokenizer_.gguf().tokens_size() > 0 &&
      static_cast<uint64_t>(tokenizer_.gguf().tokens_size()) > vocab) {
    return Invalid(absl::StrCat("tokenizer has ", tokenizer_.gguf().tokens_size(),
                                " tokens but token_embd.weight only ", vocab, " rows"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> GgufCheckpoint::Open(const std::string& path) {
  std::unique_ptr<GgufCheckpoint> ckpt(new GgufCheckpoint());
  BITLOOM_ASSIGN_OR_RETURN(ckpt->file_, GgufFile::Open(path));
  ckpt->source_.set_location(path);
  ckpt->source_.set_kind("gguf");
  BITLOOM_RETURN_IF_ERROR(ckpt->ReadConfig());
  BITLOOM_RETURN_IF_ERROR(ckpt->ReadTokenizer());
  BITLOOM_RETURN_IF_ERROR(ckpt->MapTensors());
  const std::string where = absl::StrCat("GGUF file ", path);
  BITLOOM_RETURN_IF_ERROR(ValidateConfig(ckpt->config_, where));
  BITLOOM_RETURN_IF_ERROR(ckpt->FinishAndValidate(where));
  for (const SourceTensor& s : ckpt->sources_) {
    if (s.transform != Transform::kUnpermuteRows) continue;
    // The rows (values, for a bias) must split into `heads` groups of an even size.
    const uint64_t rows = s.info->ne.size() == 1 ? s.info->ne[0] : s.info->num_rows();
    if (s.heads == 0 || rows % s.heads != 0 || (rows / s.heads) % 2 != 0) {
      return ckpt->Invalid(absl::StrCat("tensor '", s.info->name, "' has ", rows,
                                        " rows, which do not split into ", s.heads,
                                        " heads of even size"));
    }
  }
  return std::unique_ptr<Checkpoint>(std::move(ckpt));
}

absl::StatusOr<std::vector<float>> GgufCheckpoint::ReadF32(const std::string& name) const {
  const CheckpointTensor* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("GGUF file ", file_->path(), ": no tensor '", name, "'"));
  }
  std::vector<float> out(sources_[t - tensors_.data()].info->num_elements);
  BITLOOM_RETURN_IF_ERROR(ReadF32Into(name, absl::MakeSpan(out)));
  return out;
}

absl::Status GgufCheckpoint::ReadF32Into(const std::string& name, absl::Span<float> out) const {
  const CheckpointTensor* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("GGUF file ", file_->path(), ": no tensor '", name, "'"));
  }
  const SourceTensor& s = sources_[t - tensors_.data()];
  const GgufTensorInfo& info = *s.info;
  if (out.size() != info.num_elements) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has ", info.num_elements,
                                                   " values, output holds ", out.size()));
  }
  switch (s.transform) {
    case Transform::kNone:
      return file_->DequantizeRows(info, 0, info.num_rows(), out);
    case Transform::kMinusOne:
      BITLOOM_RETURN_IF_ERROR(file_->DequantizeRows(info, 0, info.num_rows(), out));
      for (float& x : out) x -= 1.0f;
      return absl::OkStatus();
    case Transform::kUnpermuteRows: {
      // The converter reshaped rows as [heads, 2, half, cols], swapped the middle axes and flattened:
      // GGUF row h*hd + 2j + i holds Hugging Face row h*hd + i*half + j. A bias (1-D) is the same
      // with one value per row.
      if (info.ne.size() == 1) {
        std::vector<float> tmp(info.num_elements);
        BITLOOM_RETURN_IF_ERROR(file_->DequantizeRows(info, 0, 1, absl::MakeSpan(tmp)));
        const uint64_t hd = info.ne[0] / s.heads, half = hd / 2;
        for (uint64_t h = 0; h < s.heads; ++h) {
          for (uint64_t i = 0; i < 2; ++i) {
            for (uint64_t j = 0; j < half; ++j) out[h * hd + i * half + j] = tmp[h * hd + 2 * j + i];
          }
        }
        return absl::OkStatus();
      }
      const uint64_t cols = info.row_length(), hd = info.num_rows() / s.heads, half = hd / 2;
      for (uint64_t h = 0; h < s.heads; ++h) {
        for (uint64_t i = 0; i < 2; ++i) {
          for (uint64_t j = 0; j < half; ++j) {
            const uint64_t dst_row = h * hd + i * half + j, src_row = h * hd + 2 * j + i;
            BITLOOM_RETURN_IF_ERROR(
                file_->DequantizeRows(info, src_row, 1, out.subspan(dst_row * cols, cols)));
          }
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown transform");
}

absl::StatusOr<std::string> GgufCheckpoint::ComputeDigest() const {
  BITLOOM_ASSIGN_OR_RETURN(Sha256 sha, Sha256::Create());
  BITLOOM_RETURN_IF_ERROR(sha.UpdateFromFile(file_->path()));
  return sha.FinishHex();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path) {
  return GgufCheckpoint::Open(path);
}

}  // namespace bitloom::formats
