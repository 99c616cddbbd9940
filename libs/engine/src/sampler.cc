#include "bitloom/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace bitloom::engine {
namespace {

uint64_t ResolveSeed(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

int32_t ArgMax(absl::Span<const float> logits) {
  if (logits.empty()) return -1;
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

Sampler::Sampler(const GenerationParams& params)
    : params_(params), seed_(ResolveSeed(params.seed)), rng_(seed_) {}

std::vector<float> Sampler::ApplyPenalties(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                                           absl::Span<const int32_t> output) const {
  std::vector<float> out(logits.begin(), logits.end());
  const int64_t vocab = static_cast<int64_t>(out.size());
  const float rep = params_.EffectiveRepetitionPenalty();
  if (rep != 1.0f) {
    std::vector<bool> seen(out.size(), false);
    for (int32_t id : prompt) if (id >= 0 && id < vocab) seen[id] = true;
    for (int32_t id : output) if (id >= 0 && id < vocab) seen[id] = true;
    for (int64_t i = 0; i < vocab; ++i) {
      if (seen[i]) out[i] = out[i] > 0.0f ? out[i] / rep : out[i] * rep;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t id : output) if (id >= 0 && id < vocab) ++counts[id];
    for (const auto& [id, count] : counts) {
      out[id] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
  }
  return out;
}

std::vector<double> Sampler::Distribution(absl::Span<const float> logits) const {
  const size_t vocab = logits.size();
  std::vector<double> p(vocab, 0.0);
  if (vocab == 0) return p;
  if (params_.temperature == 0.0f) {
    p[ArgMax(logits)] = 1.0;
    return p;
  }
  const double inv_t = 1.0 / params_.temperature;
  double max_l = -INFINITY;
  for (float l : logits) max_l = std::max(max_l, static_cast<double>(l) * inv_t);
  double z = 0.0;
  for (size_t i = 0; i < vocab; ++i) z += (p[i] = std::exp(static_cast<double>(logits[i]) * inv_t - max_l));
  for (double& v : p) v /= z;

  // Rank by probability, ties to the lower id, so every mask below is deterministic.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  size_t keep = vocab;
  const bool need_order = params_.top_k > 0 || params_.EffectiveTopP() < 1.0f;
  if (need_order) {
    std::stable_sort(order.begin(), order.end(), [&p](int32_t a, int32_t b) { return p[a] > p[b]; });
    if (params_.top_k > 0) keep = std::min<size_t>(keep, params_.top_k);
    const double top_p = params_.EffectiveTopP();
    if (top_p < 1.0) {
      // Mass of the top_k survivors, so top_p is relative to the renormalised top-k distribution.
      double kept_mass = 0.0;
      for (size_t i = 0; i < keep; ++i) kept_mass += p[order[i]];
      double cum = 0.0;
      size_t n = 0;
      while (n < keep && cum < top_p * kept_mass) cum += p[order[n++]];
      keep = std::max<size_t>(n, 1);
    }
    for (size_t i = keep; i < vocab; ++i) p[order[i]] = 0.0;
  }
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * (*std::max_element(p.begin(), p.end()));
    for (double& v : p) if (v < threshold) v = 0.0;
  }
  const double mass = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& v : p) v /= mass;
  return p;
}

// 53 random bits -> u in [0, 1), independent of the standard library's distributions.
double Sampler::DrawUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                        absl::Span<const int32_t> output) {
  const std::vector<float> penalised = ApplyPenalties(logits, prompt, output);
  if (params_.temperature == 0.0f) return ArgMax(penalised);
  const std::vector<double> p = Distribution(penalised);
  const double u = DrawUniform();
  double cum = 0.0;
  int32_t last_nonzero = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) continue;
    last_nonzero = static_cast<int32_t>(i);
    cum += p[i];
    if (u < cum) return last_nonzero;
  }
  return last_nonzero;  // u landed in the rounding gap above the last survivor
}

}  // namespace bitloom::engine
