#include "bitloom/engine/decoder_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/rope_tables.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/attention.h"
#include "bitloom/kernels/embedding.h"
#include "bitloom/kernels/matmul_f32.h"
#include "bitloom/kernels/rms_norm.h"

namespace bitloom::engine {

using formats::LayerTensor;

struct DecoderModel::Layer {
  std::vector<float> attn_norm, q_proj, k_proj, v_proj, o_proj;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
  std::vector<float> q_norm, k_norm;                  // qk_norm only
  std::vector<float> post_attn_norm, mlp_norm, post_mlp_norm;
  std::vector<float> gate_proj, up_proj, down_proj;
  bool sliding = false;
};

namespace {

bool IsGemma(const std::string& arch) { return arch == "gemma3" || arch == "gemma3_text"; }

}  // namespace

absl::StatusOr<ResolvedConfig> ResolveConfig(const v1::ModelConfig& c) {
  static const char* const kSupported[] = {"llama", "mistral", "qwen2", "qwen3", "gemma3", "gemma3_text"};
  if (std::find_if(std::begin(kSupported), std::end(kSupported),
                   [&](const char* a) { return c.architecture() == a; }) == std::end(kSupported)) {
    return absl::InvalidArgumentError(absl::StrCat("architecture: \"", c.architecture(),
                                                   "\" is not supported (llama, mistral, qwen2, qwen3, gemma3)"));
  }
  ResolvedConfig r;
  r.architecture = c.architecture();
  const bool gemma = IsGemma(c.architecture());
  auto positive = [](const char* field, uint32_t v) -> absl::Status {
    if (v == 0 || v > (1u << 30)) return absl::InvalidArgumentError(absl::StrCat(field, ": ", v, " must be in [1, 2^30]"));
    return absl::OkStatus();
  };
  BITLOOM_RETURN_IF_ERROR(positive("vocab_size", c.vocab_size()));
  BITLOOM_RETURN_IF_ERROR(positive("hidden_size", c.hidden_size()));
  BITLOOM_RETURN_IF_ERROR(positive("intermediate_size", c.intermediate_size()));
  BITLOOM_RETURN_IF_ERROR(positive("num_layers", c.num_layers()));
  BITLOOM_RETURN_IF_ERROR(positive("num_attention_heads", c.num_attention_heads()));
  r.vocab_size = static_cast<int>(c.vocab_size());
  r.hidden_size = static_cast<int>(c.hidden_size());
  r.intermediate_size = static_cast<int>(c.intermediate_size());
  r.num_layers = static_cast<int>(c.num_layers());
  r.num_heads = static_cast<int>(c.num_attention_heads());
  r.num_kv_heads = c.num_key_value_heads() == 0 ? r.num_heads : static_cast<int>(c.num_key_value_heads());
  if (r.num_heads % r.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_key_value_heads: ", r.num_kv_heads,
                                                   " does not divide num_attention_heads ", r.num_heads));
  }
  if (c.head_dim() != 0) {
    r.head_dim = static_cast<int>(c.head_dim());
  } else if (r.hidden_size % r.num_heads == 0) {
    r.head_dim = r.hidden_size / r.num_heads;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("head_dim: 0 and hidden_size ", r.hidden_size,
                                                   " is not a multiple of num_attention_heads ", r.num_heads));
  }
  if (r.head_dim % 2 != 0) return absl::InvalidArgumentError(absl::StrCat("head_dim: ", r.head_dim, " must be even"));
  r.max_position_embeddings = static_cast<int>(std::min<uint32_t>(c.max_position_embeddings(), 1u << 30));
  r.rms_norm_eps = c.rms_norm_eps() > 0.0f ? c.rms_norm_eps() : 1e-6f;
  r.norm_weight_offset = gemma ? 1.0f : 0.0f;
  r.sandwich_norms = gemma;
  // The proto says 0 means 1, but a Gemma without its √hidden scale is simply wrong, so a reader that
  // left the field unset still gets the right model.
  if (c.embedding_scale() > 0.0f) {
    r.embedding_scale = c.embedding_scale();
  } else {
    r.embedding_scale = gemma ? static_cast<float>(std::sqrt(static_cast<double>(r.hidden_size))) : 1.0f;
  }
  r.attention_scale = static_cast<float>(
      1.0 / std::sqrt(c.query_pre_attn_scalar() > 0.0f ? static_cast<double>(c.query_pre_attn_scalar())
                                                       : static_cast<double>(r.head_dim)));
  if (c.attn_logit_softcapping() < 0.0f || c.final_logit_softcapping() < 0.0f) {
    return absl::InvalidArgumentError("attn_logit_softcapping / final_logit_softcapping must be >= 0");
  }
  r.attn_logit_softcap = c.attn_logit_softcapping();
  r.final_logit_softcap = c.final_logit_softcapping();
  r.qk_norm = c.qk_norm();
  r.attention_bias = c.attention_bias();
  r.tie_word_embeddings = c.tie_word_embeddings();
  const std::string& act = c.hidden_activation();
  if (act.empty()) {
    r.activation = gemma ? kernels::Activation::kGeluTanh : kernels::Activation::kSilu;
  } else if (act == "silu" || act == "swish") {
    r.activation = kernels::Activation::kSilu;
  } else if (act == "gelu_tanh" || act == "gelu_pytorch_tanh") {
    r.activation = kernels::Activation::kGeluTanh;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden_activation: \"", act, "\" is not one of silu, gelu_tanh"));
  }
  r.sliding_window = static_cast<int>(std::min<uint32_t>(c.sliding_window(), 1u << 30));
  // Layer i (0-based) is global when there is no window, or when the pattern makes every n-th layer
  // global ((i + 1) % n == 0: Gemma 3's 5 local : 1 global). Without a pattern every layer slides
  // (Mistral 7B v0.1).
  r.layer_is_sliding.resize(r.num_layers);
  for (int i = 0; i < r.num_layers; ++i) {
    const uint32_t n = c.sliding_window_pattern();
    r.layer_is_sliding[i] = r.sliding_window > 0 && !(n > 0 && (i + 1) % n == 0);
  }
  return r;
}

DecoderModel::~DecoderModel() = default;

absl::StatusOr<std::unique_ptr<DecoderModel>> DecoderModel::Load(const v1::ModelConfig& config,
                                                                 const WeightSource& weights, ThreadPool* pool) {
  std::unique_ptr<DecoderModel> model(new DecoderModel());
  model->config_ = config;
  BITLOOM_ASSIGN_OR_RETURN(model->cfg_, ResolveConfig(config));
  model->pool_ = pool;
  BITLOOM_ASSIGN_OR_RETURN(ModelRopeTables rope, BuildRopeTables(config, model->cfg_.head_dim));
  model->global_rope_ = std::move(rope.global);
  model->local_rope_ = std::move(rope.local);
  BITLOOM_RETURN_IF_ERROR(model->LoadWeights(weights));
  return model;
}

absl::Status DecoderModel::LoadWeights(const WeightSource& weights) {
  const ResolvedConfig& c = cfg_;
  const uint64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const uint64_t q_dim = static_cast<uint64_t>(c.num_heads) * c.head_dim;
  const uint64_t kv_dim = static_cast<uint64_t>(c.num_kv_heads) * c.head_dim;
  auto load = [&weights](const std::string& name, std::vector<uint64_t> shape,
                         std::vector<float>* out) -> absl::Status {
    BITLOOM_ASSIGN_OR_RETURN(WeightTensor t, weights.Read(name));
    if (t.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape [", absl::StrJoin(t.shape, ", "),
                                                     "], the config implies [", absl::StrJoin(shape, ", "), "]"));
    }
    *out = std::move(t.data);
    return absl::OkStatus();
  };
  BITLOOM_RETURN_IF_ERROR(load(formats::kEmbedTokens, {vocab, hidden}, &embed_));
  BITLOOM_RETURN_IF_ERROR(load(formats::kFinalNorm, {hidden}, &final_norm_));
  // Some checkpoints say "tied" yet ship lm_head anyway, and some untied GGUFs omit it; the head that is
  // present wins, otherwise fall back to the embeddings.
  if (weights.Contains(formats::kLmHead)) {
    BITLOOM_RETURN_IF_ERROR(load(formats::kLmHead, {vocab, hidden}, &lm_head_));
  } else if (!c.tie_word_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", formats::kLmHead, " not found and tie_word_embeddings is false"));
  }
  layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer& L = layers_[i];
    L.sliding = c.layer_is_sliding[i];
    auto name = [i](const char* suffix) { return LayerTensor(i, suffix); };
    BITLOOM_RETURN_IF_ERROR(load(name("attn_norm.weight"), {hidden}, &L.attn_norm));
    BITLOOM_RETURN_IF_ERROR(load(name("attn.q_proj.weight"), {q_dim, hidden}, &L.q_proj));
    BITLOOM_RETURN_IF_ERROR(load(name("attn.k_proj.weight"), {kv_dim, hidden}, &L.k_proj));
    BITLOOM_RETURN_IF_ERROR(load(name("attn.v_proj.weight"), {kv_dim, hidden}, &L.v_proj));
    BITLOOM_RETURN_IF_ERROR(load(name("attn.o_proj.weight"), {hidden, q_dim}, &L.o_proj));
    if (c.attention_bias) {
      BITLOOM_RETURN_IF_ERROR(load(name("attn.q_proj.bias"), {q_dim}, &L.q_bias));
      BITLOOM_RETURN_IF_ERROR(load(name("attn.k_proj.bias"), {kv_dim}, &L.k_bias));
      BITLOOM_RETURN_IF_ERROR(load(name("attn.v_proj.bias"), {kv_dim}, &L.v_bias));
    }
    // Llama with attention_bias also biases o_proj; Qwen2 does not. Take it when present.
    if (weights.Contains(name("attn.o_proj.bias"))) {
      BITLOOM_RETURN_IF_ERROR(load(name("attn.o_proj.bias"), {hidden}, &L.o_bias));
    }
    if (c.qk_norm) {
      BITLOOM_RETURN_IF_ERROR(load(name("attn.q_norm.weight"), {static_cast<uint64_t>(c.head_dim)}, &L.q_norm));
      BITLOOM_RETURN_IF_ERROR(load(name("attn.k_norm.weight"), {static_cast<uint64_t>(c.head_dim)}, &L.k_norm));
    }
    BITLOOM_RETURN_IF_ERROR(load(name("mlp_norm.weight"), {hidden}, &L.mlp_norm));
    if (c.sandwich_norms) {
      BITLOOM_RETURN_IF_ERROR(load(name("post_attn_norm.weight"), {hidden}, &L.post_attn_norm));
      BITLOOM_RETURN_IF_ERROR(load(name("post_mlp_norm.weight"), {hidden}, &L.post_mlp_norm));
    }
    BITLOOM_RETURN_IF_ERROR(load(name("mlp.gate_proj.weight"), {inter, hidden}, &L.gate_proj));
    BITLOOM_RETURN_IF_ERROR(load(name("mlp.up_proj.weight"), {inter, hidden}, &L.up_proj));
    BITLOOM_RETURN_IF_ERROR(load(name("mlp.down_proj.weight"), {hidden, inter}, &L.down_proj));
  }
  return absl::OkStatus();
}

KvCache DecoderModel::NewKvCache(int capacity) const {
  return KvCache(cfg_.num_layers, cfg_.num_kv_heads, cfg_.head_dim, capacity);
}

// Activation buffers of one layer run, sized for n rows; reused across the layers of a Forward().
struct DecoderModel::Scratch {
  Scratch(const ResolvedConfig& c, int64_t n)
      : h(n * c.hidden_size),
        o(n * c.hidden_size),
        q(n * c.num_heads * c.head_dim),
        k(n * c.num_kv_heads * c.head_dim),
        v(n * c.num_kv_heads * c.head_dim),
        attn(n * c.num_heads * c.head_dim),
        gate(n * c.intermediate_size),
        up(n * c.intermediate_size) {}
  std::vector<float> h, o, q, k, v, attn, gate, up;
};

LayerLinearWeights DecoderModel::linear_weights(int layer) const {
  const Layer& L = layers_[layer];
  return {L.q_proj, L.k_proj, L.v_proj, L.o_proj, L.gate_proj, L.up_proj, L.down_proj};
}

absl::Status DecoderModel::RunLayer(int li, const LayerLinearWeights& w, float* x, int64_t n,
                                    const int32_t* positions, const AttentionScope& scope,
                                    const LinearInputCapture& capture, Scratch& s) const {
  const ResolvedConfig& c = cfg_;
  const Layer& L = layers_[li];
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, hd = c.head_dim;
  const int64_t q_dim = int64_t{c.num_heads} * hd, kv_dim = int64_t{c.num_kv_heads} * hd;
  ThreadPool* pool = pool_;
  auto norm = [&](const std::vector<float>& nw, const float* in, float* out, int64_t rows, int64_t dim) {
    return kernels::RmsNormF32({in, nw.data(), out, rows, dim, c.rms_norm_eps, c.norm_weight_offset}, pool);
  };
  auto linear = [&](const float* in, absl::Span<const float> wt, const std::vector<float>& b, float* out,
                    int64_t out_dim, int64_t in_dim) {
    return kernels::MatmulF32({in, wt.data(), b.empty() ? nullptr : b.data(), out, n, out_dim, in_dim}, pool);
  };
  auto see = [&](LinearInput input, const float* in, int64_t dim) -> absl::Status {
    if (!capture) return absl::OkStatus();
    return capture(input, absl::Span<const float>(in, static_cast<size_t>(n * dim)), n, dim);
  };

  // Attention block: h = norm(x); q, k, v; [q/k norm]; RoPE; store k, v; attend; o_proj; [post norm]; +x.
  BITLOOM_RETURN_IF_ERROR(norm(L.attn_norm, x, s.h.data(), n, hidden));
  BITLOOM_RETURN_IF_ERROR(see(LinearInput::kAttention, s.h.data(), hidden));
  BITLOOM_RETURN_IF_ERROR(linear(s.h.data(), w.q_proj, L.q_bias, s.q.data(), q_dim, hidden));
  BITLOOM_RETURN_IF_ERROR(linear(s.h.data(), w.k_proj, L.k_bias, s.k.data(), kv_dim, hidden));
  BITLOOM_RETURN_IF_ERROR(linear(s.h.data(), w.v_proj, L.v_bias, s.v.data(), kv_dim, hidden));
  if (c.qk_norm) {
    BITLOOM_RETURN_IF_ERROR(norm(L.q_norm, s.q.data(), s.q.data(), n * c.num_heads, hd));
    BITLOOM_RETURN_IF_ERROR(norm(L.k_norm, s.k.data(), s.k.data(), n * c.num_kv_heads, hd));
  }
  const kernels::RopeTable* rope = L.sliding ? &local_rope_ : &global_rope_;
  BITLOOM_RETURN_IF_ERROR(kernels::RopeF32({s.q.data(), positions, rope, n, c.num_heads, hd}, pool));
  BITLOOM_RETURN_IF_ERROR(kernels::RopeF32({s.k.data(), positions, rope, n, c.num_kv_heads, hd}, pool));
  kernels::AttentionParams ap;
  ap.num_heads = c.num_heads;
  ap.num_kv_heads = c.num_kv_heads;
  ap.head_dim = hd;
  ap.scale = c.attention_scale;
  ap.logit_softcap = c.attn_logit_softcap;
  ap.sliding_window = L.sliding ? c.sliding_window : 0;
  if (scope.cache != nullptr) {
    // The cache slot layout [slot, kv_head, head_dim] is exactly k's row layout, so a block copy.
    KvCache& cache = *scope.cache;
    float* k_cache = cache.keys(li);
    float* v_cache = cache.values(li);
    std::copy(s.k.begin(), s.k.end(), k_cache + scope.start * kv_dim);
    std::copy(s.v.begin(), s.v.end(), v_cache + scope.start * kv_dim);
    ap.q = s.q.data();
    ap.k = k_cache;
    ap.v = v_cache;
    ap.q_positions = positions;
    ap.kv_positions = cache.positions();
    ap.out = s.attn.data();
    ap.num_tokens = n;
    ap.num_kv = scope.start + n;
    BITLOOM_RETURN_IF_ERROR(kernels::AttentionF32(ap, pool));
  } else {
    // Each segment attends over its own keys only: the same call Forward() makes for that sequence
    // on an empty cache, so each query gets the same bits.
    const int64_t len = n / scope.sequences;
    for (int64_t seq = 0; seq < scope.sequences; ++seq) {
      const int64_t r0 = seq * len;
      ap.q = s.q.data() + r0 * q_dim;
      ap.k = s.k.data() + r0 * kv_dim;
      ap.v = s.v.data() + r0 * kv_dim;
      ap.q_positions = positions + r0;
      ap.kv_positions = positions + r0;
      ap.out = s.attn.data() + r0 * q_dim;
      ap.num_tokens = len;
      ap.num_kv = len;
      BITLOOM_RETURN_IF_ERROR(kernels::AttentionF32(ap, pool));
    }
  }
  BITLOOM_RETURN_IF_ERROR(see(LinearInput::kAttentionOutput, s.attn.data(), q_dim));
  BITLOOM_RETURN_IF_ERROR(linear(s.attn.data(), w.o_proj, L.o_bias, s.o.data(), hidden, q_dim));
  if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(norm(L.post_attn_norm, s.o.data(), s.o.data(), n, hidden));
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += s.o[i];

  // MLP block: h = norm(x); down(act(gate(h)) · up(h)); [post norm]; +x.
  BITLOOM_RETURN_IF_ERROR(norm(L.mlp_norm, x, s.h.data(), n, hidden));
  BITLOOM_RETURN_IF_ERROR(see(LinearInput::kMlp, s.h.data(), hidden));
  BITLOOM_RETURN_IF_ERROR(linear(s.h.data(), w.gate_proj, {}, s.gate.data(), inter, hidden));
  BITLOOM_RETURN_IF_ERROR(linear(s.h.data(), w.up_proj, {}, s.up.data(), inter, hidden));
  BITLOOM_RETURN_IF_ERROR(
      kernels::GatedActivationF32({s.gate.data(), s.up.data(), s.gate.data(), n, inter, c.activation}, pool));
  BITLOOM_RETURN_IF_ERROR(see(LinearInput::kMlpOutput, s.gate.data(), inter));
  BITLOOM_RETURN_IF_ERROR(linear(s.gate.data(), w.down_proj, {}, s.o.data(), hidden, inter));
  if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(norm(L.post_mlp_norm, s.o.data(), s.o.data(), n, hidden));
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += s.o[i];
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DecoderModel::EmbedTokens(absl::Span<const int32_t> tokens) const {
  const ResolvedConfig& c = cfg_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> x(n * c.hidden_size);
  if (n == 0) return x;
  BITLOOM_RETURN_IF_ERROR(kernels::EmbeddingF32(
      {embed_.data(), tokens.data(), x.data(), c.vocab_size, c.hidden_size, n, c.embedding_scale}));
  return x;
}

absl::StatusOr<std::vector<float>> DecoderModel::HeadLogits(absl::Span<const float> hidden) const {
  const ResolvedConfig& c = cfg_;
  const int64_t size = c.hidden_size;
  if (hidden.size() % size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("HeadLogits: ", hidden.size(), " values are not rows of hidden_size ", size));
  }
  const int64_t rows = static_cast<int64_t>(hidden.size()) / size;
  std::vector<float> h(hidden.size());
  BITLOOM_RETURN_IF_ERROR(kernels::RmsNormF32(
      {hidden.data(), final_norm_.data(), h.data(), rows, size, c.rms_norm_eps, c.norm_weight_offset}, pool_));
  std::vector<float> logits(rows * c.vocab_size);
  const std::vector<float>& head = lm_head_.empty() ? embed_ : lm_head_;
  BITLOOM_RETURN_IF_ERROR(
      kernels::MatmulF32({h.data(), head.data(), nullptr, logits.data(), rows, c.vocab_size, size}, pool_));
  if (c.final_logit_softcap > 0.0f) {
    kernels::SoftcapF32(logits.data(), static_cast<int64_t>(logits.size()), c.final_logit_softcap);
  }
  return logits;
}

absl::Status DecoderModel::ForwardLayer(int layer, absl::Span<float> hidden, absl::Span<const int32_t> positions,
                                        int64_t sequences, const LayerLinearWeights& weights,
                                        const LinearInputCapture& capture) const {
  const ResolvedConfig& c = cfg_;
  if (layer < 0 || layer >= c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardLayer: layer ", layer, " outside [0, ", c.num_layers, ")"));
  }
  const int64_t n = static_cast<int64_t>(positions.size());
  if (static_cast<int64_t>(hidden.size()) != n * c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardLayer: hidden has ", hidden.size(), " values, ",
                                                   n, " positions × hidden_size ", c.hidden_size, " expected"));
  }
  if (sequences <= 0 || n % sequences != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardLayer: ", n, " rows do not split into ", sequences, " equal sequences"));
  }
  for (int32_t p : positions) {
    if (p < 0) return absl::InvalidArgumentError(absl::StrCat("position ", p, " < 0"));
  }
  if (n == 0) return absl::OkStatus();
  // Resolve substitutions, checking each against the shape the config implies.
  const LayerLinearWeights own = linear_weights(layer);
  LayerLinearWeights w;
  auto pick = [&](const char* name, absl::Span<const float> given, absl::Span<const float> mine,
                  absl::Span<const float>* out) -> absl::Status {
    if (given.empty()) {
      *out = mine;
    } else if (given.size() != mine.size()) {
      return absl::InvalidArgumentError(absl::StrCat(LayerTensor(layer, name), ": ", given.size(),
                                                     " values, the config implies ", mine.size()));
    } else {
      *out = given;
    }
    return absl::OkStatus();
  };
  BITLOOM_RETURN_IF_ERROR(pick("attn.q_proj.weight", weights.q_proj, own.q_proj, &w.q_proj));
  BITLOOM_RETURN_IF_ERROR(pick("attn.k_proj.weight", weights.k_proj, own.k_proj, &w.k_proj));
  BITLOOM_RETURN_IF_ERROR(pick("attn.v_proj.weight", weights.v_proj, own.v_proj, &w.v_proj));
  BITLOOM_RETURN_IF_ERROR(pick("attn.o_proj.weight", weights.o_proj, own.o_proj, &w.o_proj));
  BITLOOM_RETURN_IF_ERROR(pick("mlp.gate_proj.weight", weights.gate_proj, own.gate_proj, &w.gate_proj));
  BITLOOM_RETURN_IF_ERROR(pick("mlp.up_proj.weight", weights.up_proj, own.up_proj, &w.up_proj));
  BITLOOM_RETURN_IF_ERROR(pick("mlp.down_proj.weight", weights.down_proj, own.down_proj, &w.down_proj));
  Scratch scratch(c, n);
  AttentionScope scope;
  scope.sequences = sequences;
  return RunLayer(layer, w, hidden.data(), n, positions.data(), scope, capture, scratch);
}

absl::StatusOr<std::vector<float>> DecoderModel::Forward(absl::Span<const int32_t> tokens,
                                                         absl::Span<const int32_t> positions, KvCache& cache,
                                                         Logits which) const {
  const ResolvedConfig& c = cfg_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("Forward: no tokens");
  if (positions.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: ", tokens.size(), " tokens but ", positions.size(), " positions"));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (positions[t] < 0) return absl::InvalidArgumentError(absl::StrCat("position ", positions[t], " < 0"));
  }
  if (cache.num_layers() != c.num_layers || cache.slot_stride() != int64_t{c.num_kv_heads} * c.head_dim) {
    return absl::InvalidArgumentError("Forward: the KV cache was made for a different model");
  }
  if (cache.length() + n > cache.capacity()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: ", cache.length(), " + ", n,
                                                     " tokens exceed its capacity of ", cache.capacity()));
  }
  const int64_t hidden = c.hidden_size;
  const int64_t start = cache.length();
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> x, EmbedTokens(tokens));
  std::copy(positions.begin(), positions.end(), cache.positions() + start);
  Scratch scratch(c, n);
  AttentionScope scope;
  scope.cache = &cache;
  scope.start = start;
  for (int li = 0; li < c.num_layers; ++li) {
    BITLOOM_RETURN_IF_ERROR(RunLayer(li, linear_weights(li), x.data(), n, positions.data(), scope, {}, scratch));
  }
  cache.Commit(static_cast<int>(n));
  if (which == Logits::kNone) return std::vector<float>();
  const int64_t first = which == Logits::kLast ? n - 1 : 0;
  return HeadLogits(absl::Span<const float>(x.data() + first * hidden, static_cast<size_t>((n - first) * hidden)));
}

}  // namespace bitloom::engine
