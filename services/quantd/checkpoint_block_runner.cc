#include "checkpoint_block_runner.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/activations.h"
#include "bitloom/kernels/attention.h"
#include "bitloom/kernels/embedding.h"
#include "bitloom/kernels/matmul_f32.h"
#include "bitloom/kernels/rms_norm.h"

namespace bitloom::quantd {

using formats::LayerTensor;

absl::StatusOr<std::unique_ptr<CheckpointBlockRunner>> CheckpointBlockRunner::Create(
    const formats::Checkpoint& checkpoint, ThreadPool* pool) {
  BITLOOM_ASSIGN_OR_RETURN(engine::ResolvedConfig cfg, engine::ResolveConfig(checkpoint.config()));
  std::unique_ptr<CheckpointBlockRunner> runner(
      new CheckpointBlockRunner(checkpoint, pool, std::move(cfg)));
  // RoPE tables exactly as DecoderModel::Load builds them, so the calibration activations are the
  // ones inference will see.
  const v1::ModelConfig& config = checkpoint.config();
  kernels::RopeScaling scaling;
  scaling.type = config.rope_scaling_type();
  scaling.factor = config.rope_scaling_factor() > 0.0f ? config.rope_scaling_factor() : 1.0f;
  if (config.rope_low_freq_factor() > 0.0f) scaling.low_freq_factor = config.rope_low_freq_factor();
  if (config.rope_high_freq_factor() > 0.0f) {
    scaling.high_freq_factor = config.rope_high_freq_factor();
  }
  scaling.original_max_position_embeddings = config.rope_original_max_position_embeddings();
  const double theta = config.rope_theta() > 0.0f ? config.rope_theta() : 10000.0;
  BITLOOM_ASSIGN_OR_RETURN(runner->global_rope_,
                           kernels::RopeInvFreq(runner->cfg_.head_dim, theta, scaling));
  if (config.rope_local_theta() > 0.0f) {
    BITLOOM_ASSIGN_OR_RETURN(
        runner->local_rope_,
        kernels::RopeInvFreq(runner->cfg_.head_dim, config.rope_local_theta(), {}));
  } else {
    runner->local_rope_ = runner->global_rope_;
  }
  return runner;
}

std::vector<quant::LinearSite> CheckpointBlockRunner::Sites(int layer) const {
  const int64_t hidden = cfg_.hidden_size;
  const int64_t q_dim = int64_t{cfg_.num_heads} * cfg_.head_dim;
  // The four inputs of a block, in forward order; q/k/v and gate/up share theirs.
  return {
      {"attn_in",
       hidden,
       {LayerTensor(layer, "attn.q_proj.weight"), LayerTensor(layer, "attn.k_proj.weight"),
        LayerTensor(layer, "attn.v_proj.weight")}},
      {"o_in", q_dim, {LayerTensor(layer, "attn.o_proj.weight")}},
      {"mlp_in",
       hidden,
       {LayerTensor(layer, "mlp.gate_proj.weight"), LayerTensor(layer, "mlp.up_proj.weight")}},
      {"down_in", cfg_.intermediate_size, {LayerTensor(layer, "mlp.down_proj.weight")}},
  };
}

absl::StatusOr<std::vector<float>> CheckpointBlockRunner::ReadWeight(const std::string& name,
                                                                     int64_t* rows,
                                                                     int64_t* cols) const {
  const formats::CheckpointTensor* tensor = checkpoint_.FindTensor(name);
  if (tensor == nullptr || tensor->shape.size() != 2) {
    return absl::NotFoundError(absl::StrCat("no 2-D tensor '", name, "' in the source model"));
  }
  *rows = static_cast<int64_t>(tensor->shape[0]);
  *cols = static_cast<int64_t>(tensor->shape[1]);
  return checkpoint_.ReadF32(name);
}

absl::StatusOr<std::vector<float>> CheckpointBlockRunner::Embed(
    absl::Span<const int32_t> tokens) const {
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> table, checkpoint_.ReadF32(formats::kEmbedTokens));
  std::vector<float> out(tokens.size() * static_cast<size_t>(cfg_.hidden_size));
  BITLOOM_RETURN_IF_ERROR(kernels::EmbeddingF32({table.data(), tokens.data(), out.data(),
                                                 cfg_.vocab_size, cfg_.hidden_size,
                                                 static_cast<int64_t>(tokens.size()),
                                                 cfg_.embedding_scale}));
  return out;
}

absl::StatusOr<std::vector<float>> CheckpointBlockRunner::RunBlock(
    int layer, const quant::WeightMap& weights, absl::Span<const float> hidden_in,
    int64_t sequences, int64_t seq_len, const quant::CaptureFn& capture) const {
  const engine::ResolvedConfig& c = cfg_;
  const int64_t n = sequences * seq_len;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, hd = c.head_dim;
  const int64_t q_dim = int64_t{c.num_heads} * hd, kv_dim = int64_t{c.num_kv_heads} * hd;
  if (static_cast<int64_t>(hidden_in.size()) != n * hidden) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: hidden has ", hidden_in.size(),
                                                   " values, expected ", n * hidden));
  }
  const std::vector<quant::LinearSite> sites = Sites(layer);
  auto weight = [&](const char* suffix) -> absl::StatusOr<const std::vector<float>*> {
    auto it = weights.find(LayerTensor(layer, suffix));
    if (it == weights.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("RunBlock: weights lack ", LayerTensor(layer, suffix)));
    }
    return &it->second;
  };
  // Small per-block parameters (norms, biases) come straight from the checkpoint.
  auto param = [&](const char* suffix) -> absl::StatusOr<std::vector<float>> {
    return checkpoint_.ReadF32(LayerTensor(layer, suffix));
  };
  auto optional_param = [&](const char* suffix) -> std::vector<float> {
    if (checkpoint_.FindTensor(LayerTensor(layer, suffix)) == nullptr) return {};
    auto v = checkpoint_.ReadF32(LayerTensor(layer, suffix));
    return v.ok() ? *std::move(v) : std::vector<float>();
  };
  auto norm = [&](const std::vector<float>& w, const float* in, float* out, int64_t rows,
                  int64_t dim) {
    return kernels::RmsNormF32({in, w.data(), out, rows, dim, c.rms_norm_eps, c.norm_weight_offset},
                               pool_);
  };
  auto linear = [&](const float* in, const std::vector<float>& w, const std::vector<float>& b,
                    float* out, int64_t out_dim, int64_t in_dim) {
    return kernels::MatmulF32({in, w.data(), b.empty() ? nullptr : b.data(), out, n, out_dim, in_dim},
                              pool_);
  };
  auto capture_site = [&](int site, const std::vector<float>& x) -> absl::Status {
    if (!capture) return absl::OkStatus();
    return capture(sites[site], x, n);
  };

  std::vector<float> x(hidden_in.begin(), hidden_in.end());
  std::vector<float> h(n * hidden), o(n * hidden);
  std::vector<float> q(n * q_dim), k(n * kv_dim), v(n * kv_dim), attn(n * q_dim);
  std::vector<float> gate(n * inter), up(n * inter);

  // Attention: h = norm(x); q, k, v; [q/k norm]; RoPE; attend within each sequence; o; [norm]; +x.
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> attn_norm, param("attn_norm.weight"));
  BITLOOM_RETURN_IF_ERROR(norm(attn_norm, x.data(), h.data(), n, hidden));
  BITLOOM_RETURN_IF_ERROR(capture_site(0, h));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wq, weight("attn.q_proj.weight"));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wk, weight("attn.k_proj.weight"));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wv, weight("attn.v_proj.weight"));
  BITLOOM_RETURN_IF_ERROR(linear(h.data(), *wq, optional_param("attn.q_proj.bias"), q.data(), q_dim,
                                 hidden));
  BITLOOM_RETURN_IF_ERROR(linear(h.data(), *wk, optional_param("attn.k_proj.bias"), k.data(),
                                 kv_dim, hidden));
  BITLOOM_RETURN_IF_ERROR(linear(h.data(), *wv, optional_param("attn.v_proj.bias"), v.data(),
                                 kv_dim, hidden));
  if (c.qk_norm) {
    BITLOOM_ASSIGN_OR_RETURN(std::vector<float> q_norm, param("attn.q_norm.weight"));
    BITLOOM_ASSIGN_OR_RETURN(std::vector<float> k_norm, param("attn.k_norm.weight"));
    BITLOOM_RETURN_IF_ERROR(norm(q_norm, q.data(), q.data(), n * c.num_heads, hd));
    BITLOOM_RETURN_IF_ERROR(norm(k_norm, k.data(), k.data(), n * c.num_kv_heads, hd));
  }
  const bool sliding = layer < static_cast<int>(c.layer_is_sliding.size()) &&
                       c.layer_is_sliding[static_cast<size_t>(layer)];
  const kernels::RopeTable* rope = sliding ? &local_rope_ : &global_rope_;
  // Every sequence starts at position 0.
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[i] = static_cast<int32_t>(i % seq_len);
  BITLOOM_RETURN_IF_ERROR(
      kernels::RopeF32({q.data(), positions.data(), rope, n, c.num_heads, hd}, pool_));
  BITLOOM_RETURN_IF_ERROR(
      kernels::RopeF32({k.data(), positions.data(), rope, n, c.num_kv_heads, hd}, pool_));
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t first = s * seq_len;
    kernels::AttentionParams ap;
    ap.q = q.data() + first * q_dim;
    ap.k = k.data() + first * kv_dim;
    ap.v = v.data() + first * kv_dim;
    ap.q_positions = positions.data() + first;
    ap.kv_positions = positions.data() + first;
    ap.out = attn.data() + first * q_dim;
    ap.num_tokens = seq_len;
    ap.num_kv = seq_len;
    ap.num_heads = c.num_heads;
    ap.num_kv_heads = c.num_kv_heads;
    ap.head_dim = hd;
    ap.scale = c.attention_scale;
    ap.logit_softcap = c.attn_logit_softcap;
    ap.sliding_window = sliding ? c.sliding_window : 0;
    BITLOOM_RETURN_IF_ERROR(kernels::AttentionF32(ap, pool_));
  }
  BITLOOM_RETURN_IF_ERROR(capture_site(1, attn));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wo, weight("attn.o_proj.weight"));
  BITLOOM_RETURN_IF_ERROR(
      linear(attn.data(), *wo, optional_param("attn.o_proj.bias"), o.data(), hidden, q_dim));
  if (c.sandwich_norms) {
    BITLOOM_ASSIGN_OR_RETURN(std::vector<float> post, param("post_attn_norm.weight"));
    BITLOOM_RETURN_IF_ERROR(norm(post, o.data(), o.data(), n, hidden));
  }
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += o[i];

  // MLP: h = norm(x); down(act(gate(h)) · up(h)); [norm]; +x.
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> mlp_norm, param("mlp_norm.weight"));
  BITLOOM_RETURN_IF_ERROR(norm(mlp_norm, x.data(), h.data(), n, hidden));
  BITLOOM_RETURN_IF_ERROR(capture_site(2, h));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wg, weight("mlp.gate_proj.weight"));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wu, weight("mlp.up_proj.weight"));
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<float>* wd, weight("mlp.down_proj.weight"));
  BITLOOM_RETURN_IF_ERROR(linear(h.data(), *wg, {}, gate.data(), inter, hidden));
  BITLOOM_RETURN_IF_ERROR(linear(h.data(), *wu, {}, up.data(), inter, hidden));
  BITLOOM_RETURN_IF_ERROR(kernels::GatedActivationF32(
      {gate.data(), up.data(), gate.data(), n, inter, c.activation}, pool_));
  BITLOOM_RETURN_IF_ERROR(capture_site(3, gate));
  BITLOOM_RETURN_IF_ERROR(linear(gate.data(), *wd, {}, o.data(), hidden, inter));
  if (c.sandwich_norms) {
    BITLOOM_ASSIGN_OR_RETURN(std::vector<float> post, param("post_mlp_norm.weight"));
    BITLOOM_RETURN_IF_ERROR(norm(post, o.data(), o.data(), n, hidden));
  }
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += o[i];
  return x;
}

BlockRunnerFactory CheckpointBlockRunnerFactory() {
  BlockRunnerFactory factory;
  factory.supports = [](const formats::Checkpoint& checkpoint) -> absl::Status {
    return engine::ResolveConfig(checkpoint.config()).status();
  };
  factory.create = [](const formats::Checkpoint& checkpoint, ThreadPool* pool)
      -> absl::StatusOr<std::unique_ptr<quant::BlockRunner>> {
    BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointBlockRunner> runner,
                             CheckpointBlockRunner::Create(checkpoint, pool));
    return std::unique_ptr<quant::BlockRunner>(std::move(runner));
  };
  return factory;
}

}  // namespace bitloom::quantd
