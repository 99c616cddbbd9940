// A toy decoder whose blocks hide small errors of one tensor and show large ones, for the tests of
// the pipeline's sensitivity probe (docs/QUANTIZATION.md, section 5).
//
// Block: n = RMSNorm(h), u = A·n, v = B·n, m_j = v_j · (1 + kSpike · relu(|u_j| − τ_j)), h += C·m.
// τ_j is set at construction a margin above the largest |u_j| that any token of the vocabulary
// reaches at full precision, so the full-precision gate never fires (the block is h += C·B·n) and
// A's error is invisible until it is large enough to push some |u_j| past τ_j; then the gate fires
// hard. This is the pure form of a saturated nonlinearity: GELU far below zero, a softmax locked on
// one key, a renormalised q or k whose small errors the norm and the softmax absorb. A sensitivity
// measured where A's error is small (3 bits) says A is free, which is wrong at 1 bit.
//
// Sites "mlp_in" (A, B: [inner, hidden]) and "down_in" (C: [hidden, inner]). Tokens do not
// interact, so the hidden states over the vocabulary are the only inputs a block ever sees at full
// precision.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bitloom/quant/block_runner.h"
#include "test_util.h"
#include "toy_block_runner.h"

namespace bitloom::quant::testing {

class SaturatedGateToyRunner : public ToyBlockRunner {
 public:
  // How far above the full-precision range the gate's threshold sits, as a fraction of it.
  static constexpr float kMargin = 0.15f;
  // The gate's slope once it fires, per unit of |u| past the threshold.
  static constexpr float kSpike = 200.0f;

  // Later blocks write more into the stream (C grows with the layer): tensors of unequal
  // importance to trade.
  SaturatedGateToyRunner(int layers, int64_t hidden, int64_t inner, int64_t vocab)
      : ToyBlockRunner(layers, hidden, inner, vocab, 1.0f, [inner](int l) {
          return 0.5f / std::sqrt(static_cast<float>(inner)) * (0.25f + l);
        }) {
    // Thresholds layer by layer from the full-precision states of every token (the gate is open
    // while its threshold is still infinite, and the block then computes exactly the fp forward).
    threshold_.assign(layers, std::vector<float>(inner, std::numeric_limits<float>::infinity()));
    std::vector<int32_t> all(vocab);
    for (int32_t t = 0; t < vocab; ++t) all[t] = t;
    std::vector<float> h = *Embed(all);
    for (int l = 0; l < layers; ++l) {
      std::vector<float> reach(inner, 0.0f);
      std::vector<float> n = Normalized(h);
      const std::vector<float>& a = weights().at(Name(l, "a"));
      for (int64_t r = 0; r < vocab; ++r) {
        for (int64_t j = 0; j < inner; ++j) {
          reach[j] = std::max(reach[j], std::abs(Dot(&a[j * hidden], &n[r * hidden], hidden)));
        }
      }
      for (int64_t j = 0; j < inner; ++j) threshold_[l][j] = (1.0f + kMargin) * reach[j];
      h = *RunBlock(l, weights(), h, 1, vocab, {});
    }
  }

 protected:
  float Gate(int l, int64_t j, float u, float v) const override {
    const float past = std::abs(u) - threshold_[l][j];
    return v * (1.0f + (past > 0.0f ? kSpike * past : 0.0f));
  }

 private:
  std::vector<std::vector<float>> threshold_;  // [layer][inner]
};

}  // namespace bitloom::quant::testing
