// Device helpers of the scalar-codec GEMV: how two K-bit codes of one code block become one fp16x2
// register of the tensor-core A fragment, and which two activations go with them.
//
// The 32 codes of a block are paired (i, i+G), G = kGap: the pair's two codes then lie
// G·K bits apart in the block's bit stream, which for the G chosen below is close enough to 16
// that one 32-bit window of the stream (a funnel shift of two adjacent words, or a plain word when
// the window is word-aligned) holds code i inside the low half's 10 mantissa bits and code i+G
// inside the high half's. One LOP3 then masks both codes and ORs in the fp16 exponent of 1024:
//
//     half = 1024 + q·2^pos          (exact; pos = the code's bit offset inside its half)
//     q    = half·2^-pos − 1024·2^-pos                       one HFMA2, exact
//     w    = q·s − c·s                                       one HFMA2, the only rounding
//
// so a pair costs a shift, a LOP3 and two HFMA2 whatever K is, with no table and no divergence:
// every index, shift and constant is a compile-time function of (K, pair). The pair order is local
// to a lane (the mma sums over k, so any permutation of k shared by A and B is the same product);
// the activations are permuted to match with one PRMT per pair (ActivationPair).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "device_util.cuh"

namespace bitloom::kernels::cuda::detail {

template <int K>
struct ScalarPairPlan {
  static_assert(K >= 1 && K <= 8, "K must be 1..8");
  // G with G·K in [6+K, 26−K] (both codes fit a 10-bit mantissa field 16 bits apart) and 2G | 32.
  static constexpr int kGap = K == 1 ? 16 : K == 2 ? 8 : K <= 5 ? 4 : 2;
  static constexpr int kDist = kGap * K;  // stream bits from a pair's low code to its high code
  // Valid bit offsets of the low code inside its half (the high code sits at pos + kDist − 16).
  static constexpr int kPosMin = 16 - kDist > 0 ? 16 - kDist : 0;
  static constexpr int kPosMax = (10 - K) < (26 - K - kDist) ? (10 - K) : (26 - K - kDist);
  static_assert(kPosMin <= kPosMax, "no 32-bit window holds both codes of a pair");

  // Low code of pair p (0..15): pairs (i, i+G) for the i whose bit G is clear.
  __host__ __device__ static constexpr int Low(int p) { return (p / kGap) * 2 * kGap + p % kGap; }
  // The low code's offset in its half: word-aligned (no shift needed) when any valid offset is.
  __host__ __device__ static constexpr int Pos(int p) {
    for (int c = kPosMin; c <= kPosMax; ++c) {
      if (Low(p) * K - c >= 0 && (Low(p) * K - c) % 32 == 0) return c;
    }
    return kPosMin;
  }
  __host__ __device__ static constexpr int Start(int p) { return Low(p) * K - Pos(p); }  // window start in the stream
};


// The fp16 exponent bits of 1024 in both halves, ORed under the code masks. Kept in a register
// (kHalf2Exponent is passed as an operand) so that mask-and-OR is one LOP3 with the mask as its
// immediate; written as two C operators it compiles to two LOP3, one per constant.
constexpr uint32_t kHalf2Exponent = 0x64006400u;

// (v & kMask) | exponent.
template <uint32_t kMask>
__device__ __forceinline__ uint32_t MaskIntoHalf2(uint32_t v, uint32_t exponent) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(v), "n"(kMask), "r"(exponent));
  return d;
}

// The entry of a grouped launch whose row tiles include `tile`: entry i owns [m[i].first_tile,
// m[i+1].first_tile) of the `count` entries (the register and the tiled launches' argument tables).
template <typename GroupArgs>
__device__ __forceinline__ int EntryOfTile(const GroupArgs& a, int tile) {
  int e = 0;
#pragma unroll
  for (int i = 1; i < static_cast<int>(sizeof(a.m) / sizeof(a.m[0])); ++i) {
    if (i < a.count && tile >= a.m[i].first_tile) e = i;
  }
  return e;
}

// Pair P of the code block whose K words start at w[kBase]: fp16x2 {w_i, w_{i+G}} = q·s − c·s.
// `exponent` is kHalf2Exponent.
template <int K, int P, int kBase, int kWords>
__device__ __forceinline__ uint32_t DecodePair(const uint32_t (&w)[kWords], __half2 scale,
                                               __half2 neg_cs, uint32_t exponent) {
  using Plan = ScalarPairPlan<K>;
  constexpr int kPos = Plan::Pos(P);
  constexpr int kPosHigh = kPos + Plan::kDist - 16;
  constexpr int kStart = Plan::Start(P);
  uint32_t v;
  if constexpr (kStart < 0) {
    v = w[kBase] << (-kStart);
  } else if constexpr (kStart % 32 == 0) {
    v = w[kBase + kStart / 32];
  } else if constexpr (kStart / 32 + 1 < K) {
    v = __funnelshift_r(w[kBase + kStart / 32], w[kBase + kStart / 32 + 1], kStart % 32);
  } else {
    v = w[kBase + kStart / 32] >> (kStart % 32);  // the window runs past the block: bits unused
  }
  constexpr uint32_t kCode = (1u << K) - 1u;
  constexpr uint32_t kMask = (kCode << kPos) | (kCode << (16 + kPosHigh));
  // fp16 bits: 2^-pos = (15 − pos) << 10; −1024·2^-pos = sign | (25 − pos) << 10.
  constexpr uint32_t kMul = (uint32_t(15 - kPos) << 10) | (uint32_t(15 - kPosHigh) << 26);
  constexpr uint32_t kAdd =
      (0x8000u | (uint32_t(25 - kPos) << 10)) | ((0x8000u | (uint32_t(25 - kPosHigh) << 10)) << 16);
  const __half2 q = __hfma2(U32AsHalf2(MaskIntoHalf2<kMask>(v, exponent)), U32AsHalf2(kMul),
                            U32AsHalf2(kAdd));
  return Half2AsU32(__hfma2(q, scale, neg_cs));
}

// The last mma (0..7) of a code block that reads the block's activation uint4 `v` (words
// 4v..4v+3 of ActivationPair's 16): after it, the registers can take the next block's uint4 v.
// mma m reads pairs 2m and 2m+1.
template <int K>
__host__ __device__ constexpr int LastMmaReadingActivations(int v) {
  using Plan = ScalarPairPlan<K>;
  int last = -1;
  for (int m = 0; m < 8; ++m) {
    for (int p = 2 * m; p <= 2 * m + 1; ++p) {
      const int i = Plan::Low(p);
      if ((i >> 1) / 4 == v || ((i + Plan::kGap) >> 1) / 4 == v) last = m;
    }
  }
  return last;
}

// The activations {x_i, x_{i+G}} of pair P from the block's 32 fp16 activations (16 words).
template <int K, int P>
__device__ __forceinline__ uint32_t ActivationPair(const uint32_t (&xw)[16]) {
  using Plan = ScalarPairPlan<K>;
  constexpr int i = Plan::Low(P);
  constexpr int j = i + Plan::kGap;
  constexpr uint32_t kSelect = ((i & 1) ? 0x32u : 0x10u) | ((j & 1) ? 0x7600u : 0x5400u);
  return __byte_perm(xw[i >> 1], xw[j >> 1], kSelect);
}

}  // namespace bitloom::kernels::cuda::detail
