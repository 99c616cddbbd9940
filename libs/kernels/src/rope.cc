#include "bitloom/kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "parallel.h"

namespace bitloom::kernels {
namespace {

// Yarn's correction range: the dimension index whose wavelength completes `rotations` turns over the
// original context (transformers' _compute_yarn_parameters).
double YarnCorrectionDim(double rotations, int dim, double base, double original_max) {
  return (dim * std::log(original_max / (rotations * 2.0 * std::numbers::pi))) / (2.0 * std::log(base));
}

}  // namespace

absl::StatusOr<RopeTable> RopeInvFreq(int head_dim, double base, const RopeScaling& s) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("rope: head_dim ", head_dim, " must be even and > 0"));
  }
  if (!(base > 0.0)) return absl::InvalidArgumentError(absl::StrCat("rope: theta ", base, " must be > 0"));
  const int half = head_dim / 2;
  RopeTable table;
  table.inv_freq.resize(half);
  for (int i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, d, 2).float() / d), evaluated in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float denom = static_cast<float>(std::pow(base, static_cast<double>(exponent)));
    table.inv_freq[i] = 1.0f / denom;
  }
  if (s.type.empty() || s.type == "default") return table;
  if (!(s.factor > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("rope_scaling_factor: ", s.factor, " must be > 0"));
  }
  if (s.type == "linear") {
    for (float& f : table.inv_freq) f /= s.factor;
    return table;
  }
  if (s.type == "llama3") {
    if (s.original_max_position_embeddings == 0 || !(s.high_freq_factor > s.low_freq_factor)) {
      return absl::InvalidArgumentError(
          "rope llama3 scaling: needs original_max_position_embeddings > 0 and high_freq_factor > "
          "low_freq_factor");
    }
    // Long wavelengths (beyond the original context / low_freq_factor) are slowed by `factor`, short
    // ones (below original / high_freq_factor) are kept, and the band between is interpolated.
    const double old_ctx = s.original_max_position_embeddings;
    const double low_wavelen = old_ctx / s.low_freq_factor;
    const double high_wavelen = old_ctx / s.high_freq_factor;
    for (float& f : table.inv_freq) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / s.factor);
        continue;
      }
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / s.factor + smooth * f);
    }
    return table;
  }
  if (s.type == "yarn") {
    if (s.original_max_position_embeddings == 0) {
      return absl::InvalidArgumentError("rope yarn scaling: needs original_max_position_embeddings > 0");
    }
    const double orig = s.original_max_position_embeddings;
    double low = std::floor(YarnCorrectionDim(s.beta_fast, head_dim, base, orig));
    double high = std::ceil(YarnCorrectionDim(s.beta_slow, head_dim, base, orig));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(head_dim - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
    for (int i = 0; i < half; ++i) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double extrapolation_factor = 1.0 - ramp;
      const double extrapolated = table.inv_freq[i];
      const double interpolated = extrapolated / s.factor;
      table.inv_freq[i] = static_cast<float>(interpolated * (1.0 - extrapolation_factor) +
                                             extrapolated * extrapolation_factor);
    }
    table.attention_scaling = s.factor <= 1.0f ? 1.0f : static_cast<float>(0.1 * std::log(s.factor) + 1.0);
    return table;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("rope_scaling_type: \"", s.type, "\" is not one of \"\", linear, llama3, yarn"));
}

absl::Status RopeF32(const RopeParams& p, ThreadPool* pool) {
  if (p.tokens < 0 || p.heads <= 0 || p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError("RopeF32: needs tokens >= 0, heads > 0, even head_dim > 0");
  }
  if (p.tokens == 0) return absl::OkStatus();
  if (p.x == nullptr || p.positions == nullptr || p.table == nullptr) {
    return absl::InvalidArgumentError("RopeF32: x, positions and table must be non-null");
  }
  const int64_t half = p.head_dim / 2;
  if (static_cast<int64_t>(p.table->inv_freq.size()) != half) {
    return absl::InvalidArgumentError(absl::StrCat("RopeF32: table has ", p.table->inv_freq.size(),
                                                   " frequencies, head_dim/2 is ", half));
  }
  for (int64_t t = 0; t < p.tokens; ++t) {
    if (p.positions[t] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("RopeF32: position ", p.positions[t], " < 0"));
    }
  }
  internal::ParallelRange(pool, p.tokens, p.heads * p.head_dim * 4, [&p, half](int64_t t0, int64_t t1) {
    std::vector<float> cos_v(half), sin_v(half);
    const float scaling = p.table->attention_scaling;
    for (int64_t t = t0; t < t1; ++t) {
      const float pos = static_cast<float>(p.positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = pos * p.table->inv_freq[i];  // fp32 product, as transformers forms it
        cos_v[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * scaling;
        sin_v[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * scaling;
      }
      for (int64_t h = 0; h < p.heads; ++h) {
        float* v = p.x + (t * p.heads + h) * p.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = v[i];
          const float x2 = v[i + half];
          v[i] = x1 * cos_v[i] - x2 * sin_v[i];
          v[i + half] = x2 * cos_v[i] + x1 * sin_v[i];
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
