// The tiled layout of 2-, 3-, 4- and 8-bit scalar codes and its GEMV (see scalar_codec_tiled.h).
//
// Layout in VRAM, per weight: [tile = 16 rows][group = 128 columns][vector][lane 0..31][V words]. Lane
// 4g + t holds K words of row g, then K words of row g+8, of columns [32t, 32t + 32) of the group,
// cut into vectors of V = 4 words (K even) or 2 (K = 3), so that a warp's load of vector v is 32·V
// consecutive words (tiled_layout.cuh, TiledGroupWord). K = 2, 4,
// 8: word i covers columns 4C·i .. 4C·i + 4C − 1 (C = 8/K codes per byte), the code of its local
// column l = 4c + r (class c = 0..C−1, r = 0..3) at bit K·c + (0, 16, 8, 24)[r]. K = 3: columns 2j and
// 2j+1 sit at the same bits of a word's two halves, pairs 4i..4i+3 in word i at bits 0, 9, 3, 12,
// pairs 12..14 at bits 6 of words 0..2, and pair 15 on the halves' bit 15 of the three words
// (tiled_layout.cuh). The artifact's K words of a lane hold the same 32 columns in order (code l at
// bit K·l), so the rewrite moves whole K-word units within a 16-row tile and permutes the bits inside
// each: a tile spans the same 16·cols·K/8 bytes in both layouts, and the rewrite runs in place through
// shared memory. (K = 4: word i = columns 8i..8i+7, nibble slots (0, 4, 2, 6, 1, 5, 3, 7).)
//
// GEMV. One thread block of W warps per 16-row tile; warp w takes groups w, w + W, ... (split-K)
// with the codes of its next kAhead groups in flight in a register ring, and the warps' sums meet in
// shared memory. Per group a lane loads its 8K code bytes and its 64 activation bytes (columns
// 32t..32t+31 of its batch row g; lanes past the batch read the last row, whose products land in
// columns that are never stored). Word i of row g and of row g+8 feed C mma m16n8k16, one per class:
//   A = {LOP3(w, M_c), LOP3(w_g+8, M_c), LOP3(w >> 8, M_c), LOP3(w_g+8 >> 8, M_c)},  M_c = (2^K − 1)·0x00010001 << K·c,
// i.e. the fp16 pairs {1024 + q·2^(K·c)} of columns 4C·i + 4c + (0, 1) and (2, 3), against B = the
// lane's activations in natural order, plus one mma per class with A = 1.0 (the sums X_c of the same
// k-slots). All 16 k-slots of every mma lie in one scale group, so per group and output, in fp32:
//   Σ (q − centre)·x = Σ_c 2^(−K·c)·acc_c − Σ_c (1024·2^(−K·c) + centre)·X_c,    y += s · that.
// The fp32 sums of (1024 + q·2^(Kc))·x lose about 7 of their 24 bits to the offset (~1e-5 relative),
// far below the fp16 activations' rounding. Per 2048 weights at K = 4 the compiled loop is 119
// instructions (the register GEMV's ~210). K = 3 has three classes (operands 1024 + q·{1, 8, 64})
// and the same eight mma per group (TiledMmasThreeBit). The offset term Σ_c (1024·2^(−K·c) +
// centre)·X_c does not depend on the row: for launches whose entries are all at K ≤ 3 the rotation
// can write it per group and batch row (TiledArgs::offset_terms, tiled_layout.cuh), and kTerms
// kernels then load one float2 per group instead of taking the A = 1.0 mma.

#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "dependent_launch.cuh"
#include "device_properties.h"
#include "device_util.cuh"
#include "launch.h"
#include "scalar_codec_gemv.cuh"  // MaskIntoHalf2, EntryOfTile
#include "tiled_layout.cuh"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kLanes = 32;
constexpr int kMaxTiledWarps = 16;

// A lane's K words of 32 codes, from the artifact's order (code l at bits K·l.. of the K words) to
// their tiled positions: within each word for K = 2, 4, 8, bit by bit across the three for K = 3.
template <int K>
__device__ __forceinline__ void TileCodes(const uint32_t* src, uint32_t* dst) {
  if constexpr (K == 3) {
    uint32_t in[K], out[K];
#pragma unroll
    for (int w = 0; w < K; ++w) {
      in[w] = src[w];
      out[w] = 0;
    }
#pragma unroll
    for (int l = 0; l < 32; ++l) {
#pragma unroll
      for (int b = 0; b < K; ++b) {
        const int from = K * l + b, to = detail::TiledCodeBit(K, l, b);
        out[to / 32] |= ((in[from / 32] >> (from % 32)) & 1u) << (to % 32);
      }
    }
#pragma unroll
    for (int w = 0; w < K; ++w) dst[w] = out[w];
  } else {
    constexpr uint32_t kMask = (1u << K) - 1u;
#pragma unroll
    for (int w = 0; w < K; ++w) {
      const uint32_t in = src[w];
      uint32_t out = 0;
#pragma unroll
      for (int l = 0; l < 32 / K; ++l) out |= ((in >> (K * l)) & kMask) << detail::TiledFieldBit(K, l);
      dst[w] = out;
    }
  }
}

// One block per tile: the tile's 16 rows into shared memory, then back in tile order, one lane's K
// words of one row (unit u = (group·32 + lane)·2 + half) per thread and step, each word to its
// place in the group (TiledGroupWord).
template <int K>
__global__ void RetileKernel(uint32_t* codes, int64_t row_words) {
  extern __shared__ uint32_t tile_smem[];
  uint32_t* tile = codes + static_cast<int64_t>(blockIdx.x) * kTiledTileRows * row_words;
  const int n = static_cast<int>(kTiledTileRows * row_words);
  for (int i = threadIdx.x; i < n; i += blockDim.x) tile_smem[i] = tile[i];
  __syncthreads();
  for (int u = threadIdx.x; u < n / K; u += blockDim.x) {
    const int half = u & 1;
    const int lane = (u >> 1) & (kLanes - 1);
    const int group = u >> 6;
    const int row = (lane >> 2) + 8 * half;
    uint32_t words[K];
    TileCodes<K>(tile_smem + row * row_words + (group * 4 + (lane & 3)) * K, words);
    uint32_t* dst = tile + group * 2 * K * kLanes;
#pragma unroll
    for (int w = 0; w < K; ++w) dst[detail::TiledGroupWord(K, lane, half * K + w)] = words[w];
  }
}

struct TiledMatrix {
  const uint32_t* codes;   // the tiled layout
  const uint16_t* scales;  // fp16 [rows, groups_per_row]
  float* y;
  int64_t y_stride;
  int64_t groups_per_row;  // scale groups
  int bits;                // K
  uint32_t scale_magic;    // ceil(2^31 / (group_size / 128)): 128-column group → scale group
  int first_tile;
};

struct TiledArgs {
  TiledMatrix m[kGemvMaxGroup];
  const uint4* x;
  int64_t x_stride_vec;
  const float* offset_terms;  // [K = 2, 3][groups][offset_terms_stride], or null
  int64_t offset_terms_stride;
  int groups;  // 128-column groups per row
  int batch;
  int count;
  int lo_bits;  // the smallest and largest K of the entries (at most two distinct)
  int hi_bits;
};

__device__ __forceinline__ uint32_t ScaleGroup(uint32_t group, uint32_t magic) {
  return static_cast<uint32_t>((static_cast<uint64_t>(group) * magic) >> 31);
}

// Position classes of a K-bit tiled word: codes at bit K·c (+ 16, 8, 24) for c < kClasses, i.e.
// operands {1024 + q·2^(K·c)}. K = 3 has three (bits 0, 3, 6 of a half, as the shift by 9 brings
// bits 9 and 12 to 0 and 3, and the spread pair is gathered at 6).
template <int K>
inline constexpr int kClasses = K == 3 ? 3 : 8 / K;

// The value and activation-sum mma of one operand set: A from the codes, and A = 1.0 (kSums: the
// sums are not taken when the offset terms come from the rotation).
template <bool kSums = true>
__device__ __forceinline__ void MmaClass(float (&acc)[4], float (&sum)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  constexpr uint32_t kOnes = 0x3C003C00u;  // fp16x2 {1, 1}
  detail::MmaM16N8K16(acc, a0, a1, a2, a3, b0, b1);
  if constexpr (kSums) detail::MmaM16N8K16(sum, kOnes, kOnes, kOnes, kOnes, b0, b1);
}

// K = 2, 4, 8: word i of rows g (w0) and g+8 (w1) feeds one mma per class c, on the pairs 2Ci + 2c
// (the word) and 2Ci + 2c + 1 (the word >> 8).
template <int K, bool kSums = true>
__device__ __forceinline__ void TiledMmas(const uint32_t (&w0)[K], const uint32_t (&w1)[K], const uint32_t (&b)[16],
                                          float (&acc)[kClasses<K>][4], float (&sum)[kClasses<K>][4]) {
  constexpr int C = kClasses<K>;
  constexpr uint32_t kCode = ((1u << K) - 1u) * 0x00010001u;
  constexpr uint32_t e = detail::kHalf2Exponent;
  detail::StaticFor<K>([&](auto i_c) {
    constexpr int i = decltype(i_c)::value;
    const uint32_t u0 = w0[i] >> 8, u1 = w1[i] >> 8;
    detail::StaticFor<C>([&](auto c_c) {
      constexpr int c = decltype(c_c)::value;
      constexpr uint32_t kMask = kCode << (K * c);
      MmaClass<kSums>(acc[c], sum[c], detail::MaskIntoHalf2<kMask>(w0[i], e), detail::MaskIntoHalf2<kMask>(w1[i], e),
               detail::MaskIntoHalf2<kMask>(u0, e), detail::MaskIntoHalf2<kMask>(u1, e), b[2 * C * i + 2 * c],
               b[2 * C * i + 2 * c + 1]);
    });
  });
}

// K = 3 (tiled_layout.cuh): pairs 4i, 4i + 1, 4i + 2, 4i + 3 at bits 0, 9, 3, 12 of word i's halves,
// pairs 12, 13, 14 at bits 6 of words 0, 1, 2, pair 15 spread over bit 15 of the three words. Class 0
// takes pairs 4i and 4i + 1 (bits 0 and 9; the word >> 9 brings bits 9.. to 0..), class 1 pairs 4i + 2
// and 4i + 3 (bits 3 and 12), class 2 pairs 12, 13 and 14, 15 (bits 6, and pair 15 gathered at bits
// 6..8): eight mma per group like K = 4, on 3/4 of the bytes, each on two adjacent activation
// registers (other pairings made the compiler copy the activations into adjacent registers first).
template <bool kSums = true>
__device__ __forceinline__ void TiledMmasThreeBit(const uint32_t (&w0)[3], const uint32_t (&w1)[3],
                                                  const uint32_t (&b)[16], float (&acc)[3][4], float (&sum)[3][4]) {
  constexpr uint32_t e = detail::kHalf2Exponent;
  constexpr uint32_t kLow = 0x00070007u, kMid = kLow << 3, kHigh = kLow << 6;
  const uint32_t u0[3] = {w0[0] >> 9, w0[1] >> 9, w0[2] >> 9};
  const uint32_t u1[3] = {w1[0] >> 9, w1[1] >> 9, w1[2] >> 9};
  detail::StaticFor<3>([&](auto i_c) {
    constexpr int i = decltype(i_c)::value;
    MmaClass<kSums>(acc[0], sum[0], detail::MaskIntoHalf2<kLow>(w0[i], e), detail::MaskIntoHalf2<kLow>(w1[i], e),
             detail::MaskIntoHalf2<kLow>(u0[i], e), detail::MaskIntoHalf2<kLow>(u1[i], e), b[4 * i], b[4 * i + 1]);
    MmaClass<kSums>(acc[1], sum[1], detail::MaskIntoHalf2<kMid>(w0[i], e), detail::MaskIntoHalf2<kMid>(w1[i], e),
             detail::MaskIntoHalf2<kMid>(u0[i], e), detail::MaskIntoHalf2<kMid>(u1[i], e), b[4 * i + 2],
             b[4 * i + 3]);
  });
  // Bit 15 of the halves of words 0, 1, 2 to bits 6, 7, 8: the code of pair 15 times 64.
  auto spread = [&](const uint32_t (&w)[3], const uint32_t (&u)[3]) {
    const uint32_t t = detail::MaskIntoHalf2<0x00400040u>(u[0], e);
    return detail::MaskIntoHalf2<0x01000100u>(w[2] >> 7, detail::MaskIntoHalf2<0x00800080u>(w[1] >> 8, t));
  };
  MmaClass<kSums>(acc[2], sum[2], detail::MaskIntoHalf2<kHigh>(w0[0], e), detail::MaskIntoHalf2<kHigh>(w1[0], e),
           detail::MaskIntoHalf2<kHigh>(w0[1], e), detail::MaskIntoHalf2<kHigh>(w1[1], e), b[12], b[13]);
  MmaClass<kSums>(acc[2], sum[2], detail::MaskIntoHalf2<kHigh>(w0[2], e), detail::MaskIntoHalf2<kHigh>(w1[2], e),
           spread(w0, u0), spread(w1, u1), b[14], b[15]);
}

// One 128-column group of the tile for a lane: K code words of row g (w0) and of row g+8 (w1),
// activations xv (columns 32t..32t+31 of its batch row), scales sc0 / sc1, into y (rows g, g, g+8,
// g+8 × batch columns 2t, 2t+1).
//
// With kTerms the activation sums come in as the offset terms of batch columns 2t and 2t + 1 (the
// rotation's, TiledArgs::offset_terms): one mma per class and word, none with A = 1.0.
template <int K, bool kTerms = false>
__device__ __forceinline__ void TiledGroup(const uint32_t (&w0)[K], const uint32_t (&w1)[K], const uint4 (&xv)[4],
                                           float sc0, float sc1, float (&y)[4], float2 terms = {}) {
  constexpr int C = kClasses<K>;
  const uint32_t b[16] = {xv[0].x, xv[0].y, xv[0].z, xv[0].w, xv[1].x, xv[1].y, xv[1].z, xv[1].w,
                          xv[2].x, xv[2].y, xv[2].z, xv[2].w, xv[3].x, xv[3].y, xv[3].z, xv[3].w};
  float acc[C][4], sum[C][4];  // sum: the activation sums, unused with kTerms
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int f = 0; f < 4; ++f) acc[c][f] = sum[c][f] = 0.0f;
  }
  if constexpr (K == 3) {
    TiledMmasThreeBit<!kTerms>(w0, w1, b, acc, sum);
  } else {
    TiledMmas<K, !kTerms>(w0, w1, b, acc, sum);
  }
  constexpr float kCenter = ScalarGridCenter(K);
#pragma unroll
  for (int f = 0; f < 4; ++f) {
    float r = acc[0][f];
#pragma unroll
    for (int c = 1; c < C; ++c) r = fmaf(acc[c][f], 1.0f / static_cast<float>(1u << (K * c)), r);
    if constexpr (kTerms) {
      r -= (f & 1) ? terms.y : terms.x;
    } else {
#pragma unroll
      for (int c = 0; c < C; ++c) r = fmaf(-(1024.0f / static_cast<float>(1u << (K * c)) + kCenter), sum[c][f], r);
    }
    y[f] = fmaf(f < 2 ? sc0 : sc1, r, y[f]);
  }
}

// The 32-bit word k of a code vector.
__device__ __forceinline__ uint32_t Word(const uint4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
__device__ __forceinline__ uint32_t Word(const uint2& v, int k) { return k == 0 ? v.x : v.y; }

// A code vector, read once: through the read-only path without allocating in L1, which then keeps
// the activations and scales that every warp of the SM re-reads.
__device__ __forceinline__ uint4 LoadCodes(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 LoadCodes(const uint2* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Tile `block` of entry m, whose codes are K-bit, by W warps; every warp keeps the codes of its next
// kAhead groups in flight in a register ring indexed at compile time (the loop is unrolled kAhead
// times). A slot is refilled only after its group is decoded, so that the load lands in the slot's
// own registers: loading it earlier made the compiler load into spare registers and move them into
// the slot at the end of the loop, where the moves waited for the load (ncu, session 12).
template <int K, int W, int kAhead, bool kTerms>
__device__ __forceinline__ void TiledTile(const TiledArgs& a, const TiledMatrix& m, int block,
                                          float (&partial)[W][kTiledTileRows][kGemvMaxBatch]) {
  // A lane's 2K words per group, loaded as uint4 (K even) or uint2 (K = 3); vector v of every lane
  // together (TiledGroupWord).
  using Vec = std::conditional_t<K % 2 == 0, uint4, uint2>;
  constexpr int kVecWords = sizeof(Vec) / 4;
  static_assert(kVecWords == detail::TiledVectorWords(K));
  constexpr int kVec = 2 * K / kVecWords;   // vectors per lane and group
  constexpr int kGroupVec = kVec * kLanes;  // vectors per tile and group
  const int lane = threadIdx.x & (kLanes - 1);
  const int warp = threadIdx.x / kLanes;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int64_t tile = block - m.first_tile;
  const int64_t tile_row = tile * kTiledTileRows;
  const Vec* codes = reinterpret_cast<const Vec*>(m.codes) + tile * a.groups * kGroupVec + lane;
  const unsigned short* s0 = reinterpret_cast<const unsigned short*>(m.scales) + (tile_row + g) * m.groups_per_row;
  const unsigned short* s1 = s0 + 8 * m.groups_per_row;

  float y[4] = {0.f, 0.f, 0.f, 0.f};
  Vec ring[kAhead][kVec] = {};
#pragma unroll
  for (int i = 0; i < kAhead; ++i) {
    const int j = warp + i * W;
    if (j < a.groups) {
#pragma unroll
      for (int v = 0; v < kVec; ++v) ring[i][v] = LoadCodes(codes + j * kGroupVec + v * kLanes);
    }
  }
  // L1 is asked for the tile's scales, one 32-byte sector per thread: a warp's first read of a
  // sector is otherwise a DRAM round trip in the middle of its group's decode.
  {
    const char* tile_scales = reinterpret_cast<const char*>(m.scales + tile_row * m.groups_per_row);
    const int64_t bytes = kTiledTileRows * m.groups_per_row * 2;
    for (int64_t off = int64_t{threadIdx.x} * 32; off < bytes; off += int64_t{W} * kLanes * 32) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(tile_scales + off));
    }
  }
  detail::WaitForPredecessorsAfter(ring[0][0].x);  // the first codes go out before the wait
  const uint4* xrow = a.x + min(g, a.batch - 1) * a.x_stride_vec + t * 4;
  // kTerms: the offset terms of batch columns 2t and 2t + 1 at this K, one float2 per group.
  static_assert(!kTerms || K <= 3, "offset terms are written for K = 2 and 3");
  const float* terms_k = kTerms ? a.offset_terms + (K == 2 ? 0 : a.groups) * a.offset_terms_stride + 2 * t : nullptr;
  for (int j0 = warp; j0 < a.groups; j0 += kAhead * W) {
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      const int j = j0 + i * W;
      if (j >= a.groups) break;
      const uint4* xg = xrow + j * 16;
      const uint4 xv[4] = {__ldg(xg), __ldg(xg + 1), __ldg(xg + 2), __ldg(xg + 3)};
      const uint32_t sg = ScaleGroup(static_cast<uint32_t>(j), m.scale_magic);
      const float sc0 = __half2float(__ushort_as_half(__ldg(s0 + sg)));
      const float sc1 = __half2float(__ushort_as_half(__ldg(s1 + sg)));
      // Row g's K words, then row g+8's.
      uint32_t w0[K], w1[K];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
#pragma unroll
        for (int k = 0; k < kVecWords; ++k) {
          const int word = kVecWords * v + k;
          if (word < K) {
            w0[word] = Word(ring[i][v], k);
          } else {
            w1[word - K] = Word(ring[i][v], k);
          }
        }
      }
      if constexpr (kTerms) {
        const float2 terms = __ldg(reinterpret_cast<const float2*>(terms_k + j * a.offset_terms_stride));
        TiledGroup<K, true>(w0, w1, xv, sc0, sc1, y, terms);
      } else {
        TiledGroup<K>(w0, w1, xv, sc0, sc1, y);
      }
      const int next = j + kAhead * W;
      if (next < a.groups) {
#pragma unroll
        for (int v = 0; v < kVec; ++v) ring[i][v] = LoadCodes(codes + next * kGroupVec + v * kLanes);
      }
    }
  }
  partial[warp][g][2 * t] = y[0];
  partial[warp][g][2 * t + 1] = y[1];
  partial[warp][g + 8][2 * t] = y[2];
  partial[warp][g + 8][2 * t + 1] = y[3];
  __syncthreads();
  for (int i = threadIdx.x; i < kTiledTileRows * kGemvMaxBatch; i += W * kLanes) {
    const int row = i / kGemvMaxBatch;
    const int bcol = i % kGemvMaxBatch;
    if (bcol >= a.batch) continue;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) sum += partial[w][row][bcol];
    m.y[bcol * m.y_stride + tile_row + row] = sum;
  }
}

// One block per 16-row tile of the group's entries, whose K is kLoK or kHiK (a group may mix two,
// e.g. q at 2 bits and k/v at 3): the block decodes its tile with that K's body.
// kTerms (K ≤ 3 only): the offset terms come from TiledArgs::offset_terms instead of the
// activation-sum mma.
template <int kLoK, int kHiK, int W, int kAhead, bool kTerms = false>
__global__ void __launch_bounds__(W * kLanes) TiledGemvKernel(const TiledArgs a) {
  __shared__ float partial[W][kTiledTileRows][kGemvMaxBatch];
  detail::AllowDependentLaunch();
  const int block = static_cast<int>(blockIdx.x);
  const TiledMatrix& m = a.m[detail::EntryOfTile(a, block)];
  if (kLoK == kHiK || m.bits == kLoK) {
    TiledTile<kLoK, W, kAhead, kTerms>(a, m, block, partial);
  } else {
    TiledTile<kHiK, W, kAhead, kTerms>(a, m, block, partial);
  }
}

absl::Status Bad(int entry, auto... parts) {
  return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemvTiled: entry ", entry, ": ", parts...));
}

}  // namespace

int64_t TiledMaxCols(int bits) {
  return bits < 1 ? 0 : kTiledMaxTileBytes * 8 / (kTiledTileRows * bits) / kTiledGroupCols * kTiledGroupCols;
}

bool TiledLayoutApplies(const ScalarCodecGemvParams& w) {
  return (w.bits == 2 || w.bits == 3 || w.bits == 4 || w.bits == 8) && w.rows >= kTiledTileRows &&
         w.rows % kTiledTileRows == 0 && w.cols >= kTiledGroupCols && w.cols % kTiledGroupCols == 0 && w.cols <= TiledMaxCols(w.bits) &&
         w.group_size >= kTiledGroupCols && w.group_size % kTiledGroupCols == 0 &&
         w.blocks_per_row * 32 == w.cols && w.row_stride_words * 32 == w.cols * w.bits &&
         w.groups_per_row == w.cols / w.group_size && w.codes != nullptr && w.scales != nullptr &&
         reinterpret_cast<uintptr_t>(w.codes) % 16 == 0 && reinterpret_cast<uintptr_t>(w.scales) % 2 == 0;
}

namespace {

// Adds `bits` to a launch's K range [*lo, *hi] (both start at the first entry's K); false when it
// would be a third K, which one launch does not read.
bool AddLaunchBits(int bits, int* lo, int* hi) {
  if (bits == *lo || bits == *hi) return true;
  if (*lo != *hi) return false;
  *lo = std::min(*lo, bits);
  *hi = std::max(*hi, bits);
  return true;
}

}  // namespace

bool TiledGroupApplies(absl::Span<const ScalarCodecGemvParams> weights) {
  if (weights.empty()) return false;
  int lo = weights[0].bits, hi = weights[0].bits;
  for (const ScalarCodecGemvParams& w : weights) {
    if (!TiledLayoutApplies(w) || !AddLaunchBits(w.bits, &lo, &hi)) return false;
  }
  return true;
}

int PlanTiledGemv(int64_t tiles, int64_t groups_per_row, int multiprocessors, int lo_bits) {
  const int64_t sms = std::max(multiprocessors, 1);
  int w = 1;
  while (w < kMaxTiledWarps && 2 * w <= groups_per_row &&
         (tiles * w < kTiledMinWarpsPerSm * sms ||
          (groups_per_row > int64_t{kTiledMaxGroupsPerWarp} * w && tiles * w < kTiledMaxWarpsPerSm * sms))) {
    w *= 2;
  }
  // 2-bit codes on long rows: half the warps, each with twice the groups and more of them in
  // flight (PlanTiledGroupsAhead), as long as the launch then fits one wave and still has
  // kTiledAheadMaxWarpsPerSm warps per SM.
  if (lo_bits <= 2 && groups_per_row >= kTiledLongRowGroups && w >= 2 &&
      tiles * (w / 2) <= int64_t{kTiledOneWaveWarpsPerSm} * sms &&
      tiles * (w / 2) >= int64_t{kTiledAheadMaxWarpsPerSm} * sms) {
    w /= 2;
  }
  return w;
}

absl::Status LaunchScalarCodecRetile(const ScalarCodecGemvParams& w, cudaStream_t stream) {
  if (w.tiled) return absl::InvalidArgumentError("LaunchScalarCodecRetile: weight already tiled");
  if (!TiledLayoutApplies(w)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchScalarCodecRetile: weight [", w.rows, ", ", w.cols, "] at ", w.bits, " bits, group ", w.group_size,
        " has no tiled layout (needs K = 2, 3, 4 or 8, rows a multiple of 16, cols a multiple of 128 up to ",
        TiledMaxCols(w.bits), ", group size a multiple of 128, 16-byte aligned codes)"));
  }
  const size_t smem = static_cast<size_t>(kTiledTileRows * w.row_stride_words * 4);
  int device = 0, optin = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > static_cast<size_t>(optin)) {
    return absl::FailedPreconditionError(absl::StrCat("LaunchScalarCodecRetile: a tile of ", w.cols,
                                                      " columns needs ", smem, " bytes of shared memory; the device has ",
                                                      optin));
  }
  auto retile = [&](auto kernel) -> absl::Status {
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    kernel<<<static_cast<unsigned>(w.rows / kTiledTileRows), 256, smem, stream>>>(const_cast<uint32_t*>(w.codes),
                                                                                   w.row_stride_words);
    return CudaStatus(cudaGetLastError(), "RetileKernel", __FILE__, __LINE__);
  };
  switch (w.bits) {
    case 2: return retile(RetileKernel<2>);
    case 3: return retile(RetileKernel<3>);
    case 4: return retile(RetileKernel<4>);
    default: return retile(RetileKernel<8>);
  }
}

namespace {

// The kernel arguments of a tiled group, after every check; *tiles = the launch's blocks.
absl::Status BuildTiledArgs(absl::Span<const ScalarCodecGemvParams> group, TiledArgs* a, int64_t* tiles) {
  if (group.empty() || group.size() > static_cast<size_t>(kGemvMaxGroup)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemvTiled: ", group.size(),
                                                   " entries, expected 1..kGemvMaxGroup = ", kGemvMaxGroup));
  }
  const ScalarCodecGemvParams& p0 = group[0];
  *a = TiledArgs{};
  *tiles = 0;
  a->lo_bits = a->hi_bits = p0.bits;
  for (size_t i = 0; i < group.size(); ++i) {
    const ScalarCodecGemvParams& p = group[i];
    const int entry = static_cast<int>(i);
    if (!p.tiled) return Bad(entry, "not tiled (every entry of a tiled launch must be)");
    if (!TiledLayoutApplies(p)) return Bad(entry, "weight fields do not describe a tiled layout");
    if (p.cols != p0.cols || p.batch != p0.batch || p.x != p0.x || p.x_stride != p0.x_stride ||
        p.offset_terms != p0.offset_terms || p.offset_terms_stride != p0.offset_terms_stride)
      return Bad(entry, "cols, batch, x, x_stride and offset_terms must equal entry 0's");
    if (p.offset_terms != nullptr &&
        (reinterpret_cast<uintptr_t>(p.offset_terms) % 8 != 0 || p.offset_terms_stride % 2 != 0 ||
         p.offset_terms_stride < kGemvMaxBatch))
      return Bad(entry, "offset_terms must be 8-byte aligned with an even offset_terms_stride (", p.offset_terms_stride,
                 ") >= ", kGemvMaxBatch);
    if (!AddLaunchBits(p.bits, &a->lo_bits, &a->hi_bits)) {
      return Bad(entry, "bits ", p.bits, " is a third K in one launch (it reads at most two: ", a->lo_bits, " and ",
                 a->hi_bits, ")");
    }
    if (p.batch < 1 || p.batch > kGemvMaxBatch) return Bad(entry, "batch ", p.batch, " not in 1..", kGemvMaxBatch);
    if (p.x == nullptr || p.y == nullptr) return Bad(entry, "x and y must be non-null");
    if (reinterpret_cast<uintptr_t>(p.x) % 16 != 0 || p.x_stride % 8 != 0 || p.x_stride < p.cols)
      return Bad(entry, "x must be 16-byte aligned with x_stride (", p.x_stride, ") a multiple of 8 and >= cols");
    if (p.y_stride < p.rows) return Bad(entry, "y_stride ", p.y_stride, " < rows ", p.rows);
    const int64_t per_scale = p.group_size / kTiledGroupCols;
    a->m[i] = TiledMatrix{p.codes,
                          p.scales,
                          p.y,
                          p.y_stride,
                          p.groups_per_row,
                          p.bits,
                          static_cast<uint32_t>(((int64_t{1} << 31) + per_scale - 1) / per_scale),
                          static_cast<int>(*tiles)};
    *tiles += p.rows / kTiledTileRows;
    if (*tiles > INT32_MAX) return Bad(entry, "more tiles than one launch's grid takes");
  }
  a->x = reinterpret_cast<const uint4*>(p0.x);
  a->x_stride_vec = p0.x_stride / 8;
  a->groups = static_cast<int>(p0.cols / kTiledGroupCols);
  // The terms are written for K = 2 and 3 only; a launch with a larger K takes the mma.
  a->offset_terms = a->hi_bits <= 3 ? p0.offset_terms : nullptr;
  a->offset_terms_stride = p0.offset_terms_stride;
  a->batch = p0.batch;
  a->count = static_cast<int>(group.size());
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckScalarCodecGemvTiled(absl::Span<const ScalarCodecGemvParams> group) {
  TiledArgs a;
  int64_t tiles = 0;
  return BuildTiledArgs(group, &a, &tiles);
}

int PlanTiledGroupsAhead(int64_t tiles, int64_t groups_per_row, int warps_per_block, int multiprocessors,
                         int lo_bits) {
  const int64_t per_warp = groups_per_row / std::max(warps_per_block, 1);
  if (per_warp < 2) return 1;
  // Warps per SM of the launch, against what each ring depth leaves resident (its registers).
  const int64_t warps = tiles * warps_per_block;
  const int64_t sms = std::max(multiprocessors, 1);
  auto fits = [&](int per_sm) { return warps <= int64_t{per_sm} * sms; };
  if (lo_bits <= 2 && groups_per_row >= kTiledLongRowGroups) {
    return per_warp >= 4 && fits(kTiledAheadFourMaxWarpsPerSm) ? 4 : fits(kTiledOneWaveWarpsPerSm) ? 2 : 1;
  }
  return fits(kTiledAheadMaxWarpsPerSm) ? 2 : 1;
}

absl::Status LaunchScalarCodecGemvTiled(absl::Span<const ScalarCodecGemvParams> group, const TiledGemvTuning& tuning,
                                        cudaStream_t stream) {
  const int warps_per_block = tuning.warps_per_block;
  if (warps_per_block != 0 && (warps_per_block > kMaxTiledWarps || (warps_per_block & (warps_per_block - 1)) != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemvTiled: warps_per_block ", warps_per_block,
                                                   " is not 0 or a power of two up to ", kMaxTiledWarps));
  }
  if (tuning.groups_ahead != 0 && tuning.groups_ahead != 1 && tuning.groups_ahead != 2 && tuning.groups_ahead != 4) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemvTiled: groups_ahead ", tuning.groups_ahead,
                                                   " is not 0, 1, 2 or 4"));
  }
  TiledArgs a;
  int64_t tiles = 0;
  if (absl::Status st = BuildTiledArgs(group, &a, &tiles); !st.ok()) return st;
  int sms = 0;
  if (absl::Status st = detail::CurrentDeviceMultiprocessors(&sms); !st.ok()) return st;
  const int w =
      tuning.warps_per_block == 0 ? PlanTiledGemv(tiles, a.groups, sms, a.lo_bits) : tuning.warps_per_block;
  const int ahead =
      tuning.groups_ahead == 0 ? PlanTiledGroupsAhead(tiles, a.groups, w, sms, a.lo_bits) : tuning.groups_ahead;
  const detail::KernelShape shape{dim3(static_cast<unsigned>(tiles)), dim3(static_cast<unsigned>(w * kLanes))};
  auto launch = [&](auto kernel) { return detail::LaunchKernel(shape, stream, kernel, a); };
  auto by_ahead = [&]<int kLo, int kHi, int kW>() -> absl::Status {
    auto with_terms = [&]<bool kTerms>() -> absl::Status {
      switch (ahead) {
        case 1: return launch(TiledGemvKernel<kLo, kHi, kW, 1, kTerms>);
        case 2: return launch(TiledGemvKernel<kLo, kHi, kW, 2, kTerms>);
        default: return launch(TiledGemvKernel<kLo, kHi, kW, 4, kTerms>);
      }
    };
    if constexpr (kHi <= 3) {
      if (a.offset_terms != nullptr) return with_terms.template operator()<true>();
    }
    return with_terms.template operator()<false>();
  };
  auto by_warps = [&]<int kLo, int kHi>() -> absl::Status {
    switch (w) {
      case 1: return by_ahead.template operator()<kLo, kHi, 1>();
      case 2: return by_ahead.template operator()<kLo, kHi, 2>();
      case 4: return by_ahead.template operator()<kLo, kHi, 4>();
      case 8: return by_ahead.template operator()<kLo, kHi, 8>();
      default: return by_ahead.template operator()<kLo, kHi, 16>();
    }
  };
  // Every K pair of {2, 3, 4, 8} (BuildTiledArgs has checked the entries' K).
  switch (a.lo_bits * 10 + a.hi_bits) {
    case 22: return by_warps.template operator()<2, 2>();
    case 23: return by_warps.template operator()<2, 3>();
    case 24: return by_warps.template operator()<2, 4>();
    case 28: return by_warps.template operator()<2, 8>();
    case 33: return by_warps.template operator()<3, 3>();
    case 34: return by_warps.template operator()<3, 4>();
    case 38: return by_warps.template operator()<3, 8>();
    case 44: return by_warps.template operator()<4, 4>();
    case 48: return by_warps.template operator()<4, 8>();
    default: return by_warps.template operator()<8, 8>();
  }
}

}  // namespace bitloom::kernels::cuda
