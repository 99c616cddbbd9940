// Shared fixtures for the quant tests: correlated calibration inputs (so H has structure, as real
// activations do) and Gaussian weights.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace bitloom::quant::testing {

inline std::vector<float> Gaussian(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// [rows, dim] inputs x = z·A with A mixing neighbouring coordinates and a decaying per-coordinate
// scale, plus one "outlier" channel 20× larger: a Hessian with a wide spectrum and off-diagonal
// mass.
inline std::vector<float> CorrelatedInputs(int64_t rows, int64_t dim, uint64_t seed) {
  const std::vector<float> z = Gaussian(rows * dim, seed);
  std::vector<float> x(rows * dim, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      const float scale =
          1.0f / std::sqrt(1.0f + 0.05f * static_cast<float>(i)) * (i == dim / 3 ? 20.0f : 1.0f);
      float v = z[r * dim + i];
      if (i > 0) v += 0.7f * z[r * dim + i - 1];
      if (i > 1) v += 0.4f * z[r * dim + i - 2];
      x[r * dim + i] = v * scale;
    }
  }
  return x;
}

}  // namespace bitloom::quant::testing
