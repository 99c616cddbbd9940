// Helpers for the kernel tests: seeded random tensors and a normalised error measure.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace bitloom::kernels::testing {

inline std::vector<float> RandomVector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// max_i |got_i − want_i| / max(1, max_i |want_i|): relative to the tensor's scale, like ggml's NMSE
// but readable as "digits of agreement".
inline double MaxNormalizedError(const std::vector<float>& got, const std::vector<double>& want) {
  double max_want = 1.0, max_err = 0.0;
  for (double w : want) max_want = std::max(max_want, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, std::abs(got[i] - want[i]));
  return got.size() == want.size() ? max_err / max_want : INFINITY;
}

}  // namespace bitloom::kernels::testing
