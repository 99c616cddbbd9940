// Fixed-order fp32 dot products shared by the CPU kernels.
//
// Every dot product in the CPU engine is DotF32 or performs exactly its arithmetic (DotF32x4, the
// blocked MatmulF32, which keeps per-output lanes across its tiles and k-blocks): kLanes independent
// partial sums (lane l sums the elements i with i % kLanes == l, in increasing i), then a pairwise
// reduction of the lanes. Two properties follow:
//  - GCC vectorises the lane loop at -O2/-O3 without -ffast-math, because no addition is reassociated;
//  - the result depends only on the two vectors, never on how the caller tiled or threaded the work.
//    A row computes the same bits in a 512-token prefill and a 1-token decode, which is what lets the
//    engine tests demand prefill == decode to a tight tolerance.
#pragma once

#include <cstdint>

namespace bitloom::kernels::internal {

inline constexpr int kLanes = 8;

inline float ReduceLanes(float* acc) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

// sum_i a[i] * b[i] for i in [0, n).
inline float DotF32(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  return ReduceLanes(acc);
}

// out[r] = DotF32(x, w[r], n) for four rows w0..w3 at once, bit-identical to four DotF32 calls:
// each row keeps its own lanes in the same order; x is loaded once per step instead of four times.
inline void DotF32x4(const float* x, const float* w0, const float* w1, const float* w2,
                     const float* w3, int64_t n, float* out) {
  float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float xv = x[i + l];
      a0[l] += xv * w0[i + l];
      a1[l] += xv * w1[i + l];
      a2[l] += xv * w2[i + l];
      a3[l] += xv * w3[i + l];
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    a0[l] += x[i] * w0[i];
    a1[l] += x[i] * w1[i];
    a2[l] += x[i] * w2[i];
    a3[l] += x[i] * w3[i];
  }
  out[0] = ReduceLanes(a0);
  out[1] = ReduceLanes(a1);
  out[2] = ReduceLanes(a2);
  out[3] = ReduceLanes(a3);
}

}  // namespace bitloom::kernels::internal
