#include "bitloom/kernels/matmul_f32.h"

#include <algorithm>

#include "dot.h"
#include "parallel.h"

namespace bitloom::kernels {
namespace {

// Tiling (docs/ENGINE.md, "The matmul"). y[i][j] must equal DotF32(x_i, w_j, k) bit for bit, whatever
// m, the tiling or the threads, so prefill and decode agree exactly. DotF32 fixes the arithmetic of
// one output: kLanes partial sums, lane l accumulating x[t]·w[t] for t ≡ l (mod kLanes) in increasing
// t, the k % kLanes tail folded into lanes 0.., then a pairwise lane reduction. Any schedule that
// keeps each output's lanes and performs those additions in that order gives the same bits, so:
//
//  - register tile: kTileM activation rows × kTileN weight rows, kTileM·kTileN accumulators of kLanes
//    floats (4·4·8 = 128 floats). Each step loads kLanes floats of every row once and does 16
//    independent 8-wide multiply-adds, so loads per flop drop 4× against a one-row dot product;
//  - cache block over k: kBlockK floats. The accumulators of a panel (kPanelM × kPanelN outputs)
//    live in a small buffer across k-blocks; within one k-block the panel's weight slices (kPanelN ·
//    kBlockK floats, 8 KiB) and activation slices (kPanelM · kBlockK, 16 KiB) stay in L1 while every
//    tile of the panel passes over them, and the accumulator buffer (16 KiB) with them;
//  - threads: work units are panels of kPanelN weight rows; a unit computes every activation row for
//    its weight rows, so no two threads write the same output and none depends on another's sum.
//
// The edges reuse the same kernels: a partial row tile (m % kTileM) instantiates the kernel with
// fewer activation rows; a partial column tile points its missing weight rows at a real row and
// drops their results. Neither changes the arithmetic of a kept output.
constexpr int kTileM = 4;
constexpr int kTileN = 4;
constexpr int64_t kPanelN = 16;   // weight rows per work unit, a multiple of kTileN
constexpr int64_t kPanelM = 32;   // activation rows per accumulator panel, a multiple of kTileM
constexpr int64_t kBlockK = 128;  // floats of k per cache block, a multiple of kLanes
constexpr int kLanes = internal::kLanes;
static_assert(kPanelN % kTileN == 0 && kPanelM % kTileM == 0 && kBlockK % kLanes == 0);

// acc[r][c][l] += Σ x[r][t]·w[c][t] over t in [k0, k1) with t ≡ l (mod kLanes), t increasing;
// k1 − k0 is a multiple of kLanes. `acc` rows are kPanelN · kLanes floats apart.
template <int R>
inline void Tile(const float* const* x, const float* const* w, int64_t k0, int64_t k1, float* acc) {
  float a[R][kTileN][kLanes];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < kTileN; ++c) {
      for (int l = 0; l < kLanes; ++l) a[r][c][l] = acc[(r * kPanelN + c) * kLanes + l];
    }
  }
  for (int64_t t = k0; t < k1; t += kLanes) {
    for (int r = 0; r < R; ++r) {
      const float* xr = x[r] + t;
      for (int c = 0; c < kTileN; ++c) {
        const float* wc = w[c] + t;
        for (int l = 0; l < kLanes; ++l) a[r][c][l] += xr[l] * wc[l];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < kTileN; ++c) {
      for (int l = 0; l < kLanes; ++l) acc[(r * kPanelN + c) * kLanes + l] = a[r][c][l];
    }
  }
}

// On x86-64 the panel is also compiled for AVX2 and picked at load time (an ifunc), with the baseline
// (SSE2) build as the fallback: 8 lanes are one ymm register instead of two xmm. Only "avx2" is
// enabled, not "fma", so GCC cannot contract a·b + c: both clones perform the same IEEE operations
// in the same order and produce the same bits (the test compares with the lane-order definition).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BITLOOM_MATMUL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BITLOOM_MATMUL_CLONES
#endif

// Weight rows [j0, j1) (at most kPanelN) against every activation row.
BITLOOM_MATMUL_CLONES void Panel(const MatmulF32Params& p, int64_t j0, int64_t j1) {
  const int64_t k_full = p.k - p.k % kLanes;
  alignas(64) float acc[kPanelM * kPanelN * kLanes];
  const float* w[kPanelN];
  for (int64_t c = 0; c < kPanelN; ++c) w[c] = p.w + std::min(j0 + c, j1 - 1) * p.k;
  for (int64_t i0 = 0; i0 < p.m; i0 += kPanelM) {
    const int64_t rows = std::min(kPanelM, p.m - i0);
    const float* x[kPanelM];
    for (int64_t r = 0; r < rows; ++r) x[r] = p.x + (i0 + r) * p.k;
    std::fill(acc, acc + rows * kPanelN * kLanes, 0.0f);
    for (int64_t k0 = 0; k0 < k_full; k0 += kBlockK) {
      const int64_t k1 = std::min(k0 + kBlockK, k_full);
      for (int64_t c0 = 0; c0 < j1 - j0; c0 += kTileN) {
        for (int64_t r0 = 0; r0 < rows; r0 += kTileM) {
          float* a = acc + (r0 * kPanelN + c0) * kLanes;
          switch (std::min<int64_t>(kTileM, rows - r0)) {
            case 4: Tile<4>(x + r0, w + c0, k0, k1, a); break;
            case 3: Tile<3>(x + r0, w + c0, k0, k1, a); break;
            case 2: Tile<2>(x + r0, w + c0, k0, k1, a); break;
            default: Tile<1>(x + r0, w + c0, k0, k1, a); break;
          }
        }
      }
    }
    // The tail of k into lanes 0.., the lane reduction and the bias, exactly as DotF32 ends.
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = p.y + (i0 + r) * p.n;
      for (int64_t c = 0; c < j1 - j0; ++c) {
        float* lanes = acc + (r * kPanelN + c) * kLanes;
        for (int64_t t = k_full, l = 0; t < p.k; ++t, ++l) lanes[l] += x[r][t] * w[c][t];
        yr[j0 + c] = internal::ReduceLanes(lanes);
        if (p.bias != nullptr) yr[j0 + c] += p.bias[j0 + c];
      }
    }
  }
}

}  // namespace

absl::Status MatmulF32(const MatmulF32Params& p, ThreadPool* pool) {
  if (p.m < 0 || p.n < 0 || p.k < 0) {
    return absl::InvalidArgumentError("MatmulF32: m, n and k must be non-negative");
  }
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (p.x == nullptr || p.w == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("MatmulF32: x, w and y must be non-null");
  }
  const int64_t panels = (p.n + kPanelN - 1) / kPanelN;
  internal::ParallelRange(pool, panels, kPanelN * p.k * p.m, [&p](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) Panel(p, b * kPanelN, std::min(p.n, (b + 1) * kPanelN));
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
