// A toy decoder for pipeline tests with configurable widths: blocks of h += C·(silu(A·n) ⊙ (B·n)),
// n = RMSNorm(h). Sites "mlp_in" (A, B: [inner, hidden]) and "down_in" (C: [hidden, inner]);
// embeddings [vocab, hidden]. Tokens do not interact, which the pipeline does not care about.
// Other toys derive from it for its weights, sites and embedding and replace the gate (Gate).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bitloom/quant/block_runner.h"
#include "test_util.h"

namespace bitloom::quant::testing {

class ToyBlockRunner : public BlockRunner {
 public:
  ToyBlockRunner(int layers, int64_t hidden, int64_t inner, int64_t vocab)
      : ToyBlockRunner(layers, hidden, inner, vocab, 1.2f,
                       [inner](int) { return 0.8f / std::sqrt(static_cast<float>(inner)); }) {}
  static std::string Name(int l, const char* t) {
    return "layers." + std::to_string(l) + "." + t + ".weight";
  }
  int64_t vocab() const { return vocab_; }

  int num_layers() const override { return layers_; }
  int64_t hidden_size() const override { return hidden_; }
  std::vector<LinearSite> Sites(int l) const override {
    return {{"mlp_in", hidden_, {Name(l, "a"), Name(l, "b")}}, {"down_in", inner_, {Name(l, "c")}}};
  }
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override {
    auto it = weights_.find(name);
    if (it == weights_.end()) return absl::NotFoundError(name);
    const bool down = name.find(".c.") != std::string::npos;
    *rows = down ? hidden_ : inner_;
    *cols = down ? inner_ : hidden_;
    return it->second;
  }
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override {
    std::vector<float> h;
    for (int32_t t : tokens)
      h.insert(h.end(), embed_.begin() + t * hidden_, embed_.begin() + (t + 1) * hidden_);
    return h;
  }
  absl::StatusOr<std::vector<float>> RunBlock(int l, const WeightMap& w,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const CaptureFn& capture) const override {
    const int64_t rows = sequences * seq_len, d = hidden_, f = inner_;
    const auto sites = Sites(l);
    const auto& a = w.at(Name(l, "a"));
    const auto& b = w.at(Name(l, "b"));
    const auto& c = w.at(Name(l, "c"));
    const std::vector<float> n = Normalized(hidden);
    std::vector<float> m(rows * f), out(hidden.begin(), hidden.end());
    if (capture) {
      if (absl::Status s = capture(sites[0], n, rows); !s.ok()) return s;
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < f; ++j) {
        m[r * f + j] = Gate(l, j, Dot(&a[j * d], &n[r * d], d), Dot(&b[j * d], &n[r * d], d));
      }
    }
    if (capture) {
      if (absl::Status s = capture(sites[1], m, rows); !s.ok()) return s;
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < d; ++i) out[r * d + i] += Dot(&c[i * f], &m[r * f], f);
    }
    return out;
  }

 protected:
  // Unit j of layer l's gated unit from u = (A·n)_j and v = (B·n)_j: SwiGLU, silu(u)·v.
  virtual float Gate(int l, int64_t j, float u, float v) const {
    (void)l;
    (void)j;
    return u / (1.0f + std::exp(-u)) * v;
  }

  static float Dot(const float* x, const float* y, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
    return s;
  }

  // A and B of every layer ~ N(0, in_gain²/hidden), C of layer l ~ N(0, out_scale(l)²).
  template <typename OutScale>
  ToyBlockRunner(int layers, int64_t hidden, int64_t inner, int64_t vocab, float in_gain,
                 OutScale out_scale)
      : layers_(layers), hidden_(hidden), inner_(inner), vocab_(vocab) {
    embed_ = Gaussian(vocab * hidden, 1);
    const float in_scale = in_gain / std::sqrt(static_cast<float>(hidden));
    for (int l = 0; l < layers; ++l) {
      weights_[Name(l, "a")] = Gaussian(inner * hidden, 10 + l, in_scale);
      weights_[Name(l, "b")] = Gaussian(inner * hidden, 20 + l, in_scale);
      weights_[Name(l, "c")] = Gaussian(hidden * inner, 30 + l, out_scale(l));
    }
  }

  // RMSNorm (no weight) of each row of h, Σx² in double.
  std::vector<float> Normalized(absl::Span<const float> h) const {
    const int64_t d = hidden_, rows = static_cast<int64_t>(h.size()) / d;
    std::vector<float> n(h.size());
    for (int64_t r = 0; r < rows; ++r) {
      double ms = 0;
      for (int64_t i = 0; i < d; ++i) ms += double(h[r * d + i]) * h[r * d + i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ms / d + 1e-6));
      for (int64_t i = 0; i < d; ++i) n[r * d + i] = h[r * d + i] * inv;
    }
    return n;
  }
  const WeightMap& weights() const { return weights_; }
  WeightMap& mutable_weights() { return weights_; }
  int64_t inner() const { return inner_; }

 private:
  int layers_;
  int64_t hidden_, inner_, vocab_;
  std::vector<float> embed_;
  WeightMap weights_;
};

}  // namespace bitloom::quant::testing
