#include "synthetic_model.h"

#include <cmath>
#include <numbers>
#include <random>

#include "bitloom/formats/tensor_names.h"

namespace bitloom::engine::testing {

using formats::LayerTensor;

std::vector<std::string> AllFlavours() {
  return {"llama", "llama3_scaled", "smollm2_tied", "mistral_sliding", "qwen2", "qwen3", "gemma3"};
}

v1::ModelConfig SyntheticConfig(const std::string& flavour) {
  v1::ModelConfig c;
  c.set_architecture("llama");
  c.set_vocab_size(101);  // odd, not a multiple of the matmul block
  c.set_hidden_size(64);
  c.set_intermediate_size(96);
  c.set_num_layers(2);
  c.set_num_attention_heads(4);
  c.set_num_key_value_heads(2);  // GQA
  c.set_head_dim(16);
  c.set_max_position_embeddings(256);
  c.set_rms_norm_eps(1e-5f);
  c.set_rope_theta(10000.0f);
  c.set_hidden_activation("silu");
  c.add_eos_token_ids(2);
  if (flavour == "llama3_scaled") {
    c.set_rope_theta(500000.0f);
    c.set_rope_scaling_type("llama3");
    c.set_rope_scaling_factor(8.0f);
    c.set_rope_low_freq_factor(1.0f);
    c.set_rope_high_freq_factor(4.0f);
    c.set_rope_original_max_position_embeddings(64);  // small, so the scaled band matters here
  } else if (flavour == "smollm2_tied") {
    c.set_num_key_value_heads(1);
    c.set_tie_word_embeddings(true);
  } else if (flavour == "mistral_sliding") {
    c.set_architecture("mistral");
    c.set_sliding_window(5);  // every layer slides (no pattern)
  } else if (flavour == "qwen2") {
    c.set_architecture("qwen2");
    c.set_attention_bias(true);
    c.set_rope_theta(1000000.0f);
  } else if (flavour == "qwen3") {
    c.set_architecture("qwen3");
    c.set_qk_norm(true);
    c.set_head_dim(24);  // head_dim · heads != hidden, as in real Qwen3
    c.set_tie_word_embeddings(true);
  } else if (flavour == "gemma3") {
    c.set_architecture("gemma3");
    c.set_num_layers(3);
    c.set_num_attention_heads(4);
    c.set_num_key_value_heads(1);
    c.set_head_dim(32);
    c.set_hidden_activation("gelu_tanh");
    c.set_qk_norm(true);
    c.set_tie_word_embeddings(true);
    c.set_sliding_window(4);
    c.set_sliding_window_pattern(3);  // layers 0, 1 local; layer 2 global
    c.set_rope_theta(1000000.0f);
    c.set_rope_local_theta(10000.0f);
    c.set_embedding_scale(8.0f);  // √64
    c.set_query_pre_attn_scalar(24.0f);
    c.set_final_logit_softcapping(3.0f);  // small so that it bites
  } else if (flavour != "llama") {
    return {};
  }
  return c;
}

InMemoryWeightSource SyntheticWeights(const v1::ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const bool gemma = c.architecture() == "gemma3";
  InMemoryWeightSource w;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape, float scale, float offset) {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    std::vector<float> data(n);
    for (float& v : data) v = offset + scale * normal(rng);
    (void)w.Add(name, std::move(shape), std::move(data));
  };
  const uint64_t hidden = c.hidden_size(), inter = c.intermediate_size(), vocab = c.vocab_size();
  const uint64_t hd = c.head_dim(), q_dim = c.num_attention_heads() * hd, kv_dim = c.num_key_value_heads() * hd;
  // Norm weights near 1 (Gemma stores w for 1 + w, so near 0).
  const float norm_offset = gemma ? 0.0f : 1.0f;
  add(formats::kEmbedTokens, {vocab, hidden}, gemma ? 0.125f : 1.0f, 0.0f);
  add(formats::kFinalNorm, {hidden}, 0.1f, norm_offset);
  if (!c.tie_word_embeddings()) add(formats::kLmHead, {vocab, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
  for (uint32_t i = 0; i < c.num_layers(); ++i) {
    const int l = static_cast<int>(i);
    add(LayerTensor(l, "attn_norm.weight"), {hidden}, 0.1f, norm_offset);
    add(LayerTensor(l, "attn.q_proj.weight"), {q_dim, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
    add(LayerTensor(l, "attn.k_proj.weight"), {kv_dim, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
    add(LayerTensor(l, "attn.v_proj.weight"), {kv_dim, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
    add(LayerTensor(l, "attn.o_proj.weight"), {hidden, q_dim}, 1.0f / std::sqrt(float(q_dim)), 0.0f);
    if (c.attention_bias()) {
      add(LayerTensor(l, "attn.q_proj.bias"), {q_dim}, 0.3f, 0.0f);
      add(LayerTensor(l, "attn.k_proj.bias"), {kv_dim}, 0.3f, 0.0f);
      add(LayerTensor(l, "attn.v_proj.bias"), {kv_dim}, 0.3f, 0.0f);
    }
    if (c.qk_norm()) {
      add(LayerTensor(l, "attn.q_norm.weight"), {hd}, 0.1f, norm_offset);
      add(LayerTensor(l, "attn.k_norm.weight"), {hd}, 0.1f, norm_offset);
    }
    add(LayerTensor(l, "mlp_norm.weight"), {hidden}, 0.1f, norm_offset);
    if (gemma) {
      add(LayerTensor(l, "post_attn_norm.weight"), {hidden}, 0.1f, norm_offset);
      add(LayerTensor(l, "post_mlp_norm.weight"), {hidden}, 0.1f, norm_offset);
    }
    add(LayerTensor(l, "mlp.gate_proj.weight"), {inter, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
    add(LayerTensor(l, "mlp.up_proj.weight"), {inter, hidden}, 1.0f / std::sqrt(float(hidden)), 0.0f);
    add(LayerTensor(l, "mlp.down_proj.weight"), {hidden, inter}, 1.0f / std::sqrt(float(inter)), 0.0f);
  }
  return w;
}

namespace {

using Vec = std::vector<double>;

Vec Get(const InMemoryWeightSource& w, const std::string& name) {
  const auto t = w.Read(name);
  return t.ok() ? Vec(t->data.begin(), t->data.end()) : Vec();
}

// y[r] = W[r]·x (+ b[r]); W is [out, in].
Vec Linear(const Vec& x, const Vec& W, const Vec& b, size_t out) {
  const size_t in = x.size();
  Vec y(out);
  for (size_t r = 0; r < out; ++r) {
    double s = b.empty() ? 0.0 : b[r];
    for (size_t i = 0; i < in; ++i) s += W[r * in + i] * x[i];
    y[r] = s;
  }
  return y;
}

Vec Norm(const Vec& x, size_t off, size_t dim, const Vec& w, double eps, bool gemma) {
  double ss = 0;
  for (size_t i = 0; i < dim; ++i) ss += x[off + i] * x[off + i];
  const double inv = 1.0 / std::sqrt(ss / dim + eps);
  Vec y(dim);
  for (size_t i = 0; i < dim; ++i) y[i] = x[off + i] * inv * (gemma ? 1.0 + w[i] : w[i]);
  return y;
}

// HF inverse frequencies, recomputed independently (llama3 scaling per transformers' rope utils).
Vec InvFreq(const v1::ModelConfig& c, double base, bool scaled) {
  const size_t d = c.head_dim();
  Vec f(d / 2);
  for (size_t i = 0; i < d / 2; ++i) f[i] = 1.0 / std::pow(base, double(2 * i) / d);
  if (!scaled) return f;
  if (c.rope_scaling_type() == "linear") {
    for (double& v : f) v /= c.rope_scaling_factor();
  } else if (c.rope_scaling_type() == "llama3") {
    const double old = c.rope_original_max_position_embeddings(), fac = c.rope_scaling_factor();
    const double lo = c.rope_low_freq_factor(), hi = c.rope_high_freq_factor();
    for (double& v : f) {
      const double wl = 2 * std::numbers::pi / v;
      if (wl > old / lo) {
        v /= fac;
      } else if (wl >= old / hi) {
        const double s = (old / wl - lo) / (hi - lo);
        v = (1 - s) * v / fac + s * v;
      }
    }
  }
  return f;
}

void Rope(Vec& x, size_t heads, size_t hd, int pos, const Vec& inv_freq) {
  for (size_t h = 0; h < heads; ++h) {
    for (size_t i = 0; i < hd / 2; ++i) {
      const double a = pos * inv_freq[i];
      const double x1 = x[h * hd + i], x2 = x[h * hd + i + hd / 2];
      x[h * hd + i] = x1 * std::cos(a) - x2 * std::sin(a);
      x[h * hd + i + hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
    }
  }
}

double Act(double g, bool gelu) {
  if (!gelu) return g / (1 + std::exp(-g));
  return 0.5 * g * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (g + 0.044715 * g * g * g)));
}

}  // namespace

std::vector<double> NaiveForward(const v1::ModelConfig& c, const InMemoryWeightSource& w,
                                 const std::vector<int32_t>& tokens) {
  const bool gemma = c.architecture() == "gemma3";
  const size_t n = tokens.size(), H = c.hidden_size(), I = c.intermediate_size(), V = c.vocab_size();
  const size_t nh = c.num_attention_heads(), nkv = c.num_key_value_heads(), hd = c.head_dim();
  const double eps = c.rms_norm_eps();
  const double emb_scale = c.embedding_scale() > 0 ? c.embedding_scale() : 1.0;
  const double scale = 1.0 / std::sqrt(c.query_pre_attn_scalar() > 0 ? c.query_pre_attn_scalar() : double(hd));
  const Vec global_f = InvFreq(c, c.rope_theta(), true);
  const Vec local_f = c.rope_local_theta() > 0 ? InvFreq(c, c.rope_local_theta(), false) : global_f;
  const Vec embed = Get(w, formats::kEmbedTokens);
  std::vector<Vec> x(n, Vec(H));
  for (size_t t = 0; t < n; ++t) {
    for (size_t i = 0; i < H; ++i) x[t][i] = embed[tokens[t] * H + i] * emb_scale;
  }
  for (uint32_t li = 0; li < c.num_layers(); ++li) {
    const int l = static_cast<int>(li);
    auto W = [&](const char* s) { return Get(w, LayerTensor(l, s)); };
    const bool sliding = c.sliding_window() > 0 &&
                         !(c.sliding_window_pattern() > 0 && (li + 1) % c.sliding_window_pattern() == 0);
    const Vec& freqs = sliding ? local_f : global_f;
    std::vector<Vec> q(n), k(n), v(n);
    for (size_t t = 0; t < n; ++t) {
      const Vec h = Norm(x[t], 0, H, W("attn_norm.weight"), eps, gemma);
      q[t] = Linear(h, W("attn.q_proj.weight"), W("attn.q_proj.bias"), nh * hd);
      k[t] = Linear(h, W("attn.k_proj.weight"), W("attn.k_proj.bias"), nkv * hd);
      v[t] = Linear(h, W("attn.v_proj.weight"), W("attn.v_proj.bias"), nkv * hd);
      if (c.qk_norm()) {
        for (size_t hh = 0; hh < nh; ++hh) {
          const Vec y = Norm(q[t], hh * hd, hd, W("attn.q_norm.weight"), eps, gemma);
          std::copy(y.begin(), y.end(), q[t].begin() + hh * hd);
        }
        for (size_t hh = 0; hh < nkv; ++hh) {
          const Vec y = Norm(k[t], hh * hd, hd, W("attn.k_norm.weight"), eps, gemma);
          std::copy(y.begin(), y.end(), k[t].begin() + hh * hd);
        }
      }
      Rope(q[t], nh, hd, static_cast<int>(t), freqs);
      Rope(k[t], nkv, hd, static_cast<int>(t), freqs);
    }
    for (size_t t = 0; t < n; ++t) {
      Vec attn(nh * hd, 0.0);
      for (size_t hh = 0; hh < nh; ++hh) {
        const size_t g = hh / (nh / nkv);
        Vec s(t + 1, -INFINITY);
        double mx = -INFINITY;
        for (size_t j = 0; j <= t; ++j) {
          if (sliding && t - j >= c.sliding_window()) continue;
          double d = 0;
          for (size_t i = 0; i < hd; ++i) d += q[t][hh * hd + i] * k[j][g * hd + i];
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t j = 0; j <= t; ++j) {
          for (size_t i = 0; i < hd; ++i) attn[hh * hd + i] += s[j] / z * v[j][g * hd + i];
        }
      }
      Vec o = Linear(attn, W("attn.o_proj.weight"), {}, H);
      if (gemma) o = Norm(o, 0, H, W("post_attn_norm.weight"), eps, true);
      for (size_t i = 0; i < H; ++i) x[t][i] += o[i];
      const Vec h = Norm(x[t], 0, H, W("mlp_norm.weight"), eps, gemma);
      const Vec gate = Linear(h, W("mlp.gate_proj.weight"), {}, I);
      const Vec up = Linear(h, W("mlp.up_proj.weight"), {}, I);
      Vec a(I);
      for (size_t i = 0; i < I; ++i) a[i] = Act(gate[i], c.hidden_activation() == "gelu_tanh") * up[i];
      Vec d = Linear(a, W("mlp.down_proj.weight"), {}, H);
      if (gemma) d = Norm(d, 0, H, W("post_mlp_norm.weight"), eps, true);
      for (size_t i = 0; i < H; ++i) x[t][i] += d[i];
    }
  }
  const Vec head = c.tie_word_embeddings() ? embed : Get(w, formats::kLmHead);
  Vec logits(n * V);
  for (size_t t = 0; t < n; ++t) {
    const Vec h = Norm(x[t], 0, H, Get(w, formats::kFinalNorm), eps, gemma);
    const Vec l = Linear(h, head, {}, V);
    for (size_t r = 0; r < V; ++r) {
      const double cap = c.final_logit_softcapping();
      logits[t * V + r] = cap > 0 ? cap * std::tanh(l[r] / cap) : l[r];
    }
  }
  return logits;
}

}  // namespace bitloom::engine::testing
