// Device helpers of the register-tiled Hadamard rotation (hadamard_rotation.cu): the Paley base
// matrices as compile-time sign tables, the SplitMix64 sign bit, the shared-memory swizzle of the
// butterfly passes, the thread-block-cluster primitives (distributed shared memory, sm_90+), and
// the register tiles of the butterfly passes (also used by block_rotation.cuh).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include "block_reduce.cuh"  // InvRms
#include "device_util.cuh"

namespace bitloom::kernels::cuda::detail {

// f.operator()<i>() for i = 0..N−1 (f a template lambda []<int i>() {...}): indices stay
// compile-time constants, so the register tiles stay in registers.
template <int... I, typename F>
__device__ __forceinline__ void UnrollImpl(std::integer_sequence<int, I...>, F&& f) {
  (f.template operator()<I>(), ...);
}
template <int N, typename F>
__device__ __forceinline__ void Unroll(F&& f) {
  UnrollImpl(std::make_integer_sequence<int, N>{}, f);
}

// ---------------------------------------------------------------------------------------------
// Paley base matrices, built at compile time by the constructions of kernels/src/hadamard.cc
// (HadamardRotation::Create picks PaleyHadamard(p) whenever base_is_hadamard and p > 1, so the
// order alone determines B). With B known to the compiler, each term of the mixing sum is one FADD
// with or without a negated operand, and no table is read at run time.

template <int P>
struct PaleySigns {
  bool neg[P][P];  // B[i][k] = −1
};

__host__ __device__ constexpr bool IsPrimeOrder(int q) {
  if (q < 2) return false;
  for (int d = 2; d * d <= q; ++d) {
    if (q % d == 0) return false;
  }
  return true;
}

// Entry (a, b) of the (q+1)×(q+1) conference core [[0, 1ᵀ], [±1, Q]], Q_ab = χ(a − b).
__host__ __device__ constexpr int ConferenceEntry(int q, int a, int b) {
  if (a == 0 && b == 0) return 0;
  if (a == 0) return 1;
  if (b == 0) return q % 4 == 3 ? -1 : 1;
  const int d = ((a - b) % q + q) % q;
  if (d == 0) return 0;
  for (int y = 1; y < q; ++y) {
    if ((y * y) % q == d) return 1;
  }
  return -1;
}

template <int P>
__host__ __device__ constexpr PaleySigns<P> MakePaleySigns() {
  PaleySigns<P> s{};
  if (IsPrimeOrder(P - 1) && (P - 1) % 4 == 3) {  // Paley I: H = I + S
    for (int i = 0; i < P; ++i) {
      for (int j = 0; j < P; ++j) s.neg[i][j] = ConferenceEntry(P - 1, i, j) + (i == j) < 0;
    }
    return s;
  }
  // Paley II (q = P/2 − 1 ≡ 1 mod 4): 0 → [[1,−1],[−1,−1]], ±1 → ±[[1,1],[1,−1]].
  const int q = P / 2 - 1;
  for (int i = 0; i < P / 2; ++i) {
    for (int j = 0; j < P / 2; ++j) {
      const int v = ConferenceEntry(q, i, j);
      const int blk[4] = {v == 0 ? 1 : v, v == 0 ? -1 : v, v == 0 ? -1 : v, v == 0 ? -1 : -v};
      for (int a = 0; a < 2; ++a) {
        for (int b = 0; b < 2; ++b) s.neg[2 * i + a][2 * j + b] = blk[2 * a + b] < 0;
      }
    }
  }
  return s;
}

// H·Hᵀ = P·I: a compile-time check that the order has a Paley construction at all.
template <int P>
__host__ __device__ constexpr bool IsHadamard(const PaleySigns<P>& s) {
  for (int i = 0; i < P; ++i) {
    for (int j = 0; j < P; ++j) {
      int dot = 0;
      for (int k = 0; k < P; ++k) dot += (s.neg[i][k] == s.neg[j][k]) ? 1 : -1;
      if (dot != (i == j ? P : 0)) return false;
    }
  }
  return true;
}

template <int P>
inline constexpr PaleySigns<P> kPaleySigns = MakePaleySigns<P>();

// ---------------------------------------------------------------------------------------------
// Signs: bit 63 of SplitMix64 output i, from the counter state seed + (i+1)·γ. The final
// xor-shift (z ^ z >> 31) leaves bit 63 alone, and bit 63 of z·M only needs the high word of the
// product: hi(lo·M_lo) + lo·M_hi + hi·M_lo (mod 2^32).

inline constexpr uint64_t kSplitMixGamma = 0x9e3779b97f4a7c15ull;

__device__ __forceinline__ uint32_t SplitMixSignBit(uint64_t state) {
  uint64_t z = (state ^ (state >> 30)) * 0xbf58476d1ce4e5b9ull;
  z ^= z >> 27;
  const uint32_t lo = static_cast<uint32_t>(z);
  const uint32_t hi = static_cast<uint32_t>(z >> 32);
  const uint32_t top = __umulhi(lo, 0x133111ebu) + lo * 0x94d049bbu + hi * 0x133111ebu;
  return top & 0x80000000u;  // the sign bit to XOR into the fp32 value (exactly x·(±1))
}

// ---------------------------------------------------------------------------------------------
// Shared-memory swizzle of the butterfly work buffer (fp32 words, logical index u). Word bits 2-3
// take bits 5-6 and bit 4 takes bit 8, so that (a) the first pass's 16-byte stores of 16
// consecutive words per thread, (b) the pass over bits 4-7 (lanes 16 apart in bit 8) and (c) every
// pass over higher bits are free of bank conflicts. Bits 0-1 stay, so 4-word chunks stay
// contiguous and 16-byte aligned.
__device__ __forceinline__ int SwizzleWork(int u) {
  return u ^ (((u >> 5) & 3) << 2) ^ (((u >> 8) & 1) << 4);
}

// ---------------------------------------------------------------------------------------------
// Thread-block cluster primitives (PTX ISA 7.8+, sm_90). Compiled to a trap on older targets,
// where the launcher never forms clusters.

__device__ __forceinline__ void ClusterArriveRelaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void ClusterArriveRelease() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void ClusterWaitAcquire() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// The shared::cluster address of `local_addr` (a shared::cta address) in block `rank`'s copy.
__device__ __forceinline__ uint32_t MapSharedRank(uint32_t local_addr, uint32_t rank) {
  uint32_t out = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(out) : "r"(local_addr), "r"(rank));
#else
  __trap();
#endif
  return out;
}

__device__ __forceinline__ void StoreSharedCluster(uint32_t cluster_addr, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(cluster_addr), "f"(v) : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void StoreSharedCluster(uint32_t cluster_addr, double v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.f64 [%0], %1;\n" ::"r"(cluster_addr), "d"(v) : "memory");
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Register tiles: a thread's 16 elements whose indices differ in 4 consecutive bits, so that 4
// butterfly stages run in registers.

inline constexpr int kTile = 16;

// The signs of the kTile elements e0 .. e0 + 15 as bits (bit q: element e0 + q), so that a kernel can
// form them before it waits for its input; ApplyTileSigns XORs them into the tile's sign bits.
__device__ __forceinline__ uint32_t TileSignBits(uint64_t seed, int64_t e0) {
  uint64_t state = seed + static_cast<uint64_t>(e0 + 1) * kSplitMixGamma;
  uint32_t bits = 0;
#pragma unroll
  for (int q = 0; q < kTile; ++q) {
    bits |= SplitMixSignBit(state) >> (31 - q);
    state += kSplitMixGamma;
  }
  return bits;
}

__device__ __forceinline__ void ApplyTileSigns(float (&v)[kTile], uint32_t bits) {
#pragma unroll
  for (int q = 0; q < kTile; ++q) v[q] = __uint_as_float(__float_as_uint(v[q]) ^ ((bits << (31 - q)) & 0x80000000u));
}

// 16 consecutive elements from x (16-byte vector loads when x is 16-byte aligned).
template <typename Tin>
__device__ __forceinline__ void LoadTile(const Tin* x, bool vector_load, float (&v)[kTile]);

template <>
__device__ __forceinline__ void LoadTile<__half>(const __half* x, bool vector_load,
                                                 float (&v)[kTile]) {
  if (vector_load) {
    const uint4* p = reinterpret_cast<const uint4*>(x);
    const uint4 w[2] = {p[0], p[1]};
    detail::Unroll<2>([&]<int i>() {
      const uint32_t u[4] = {w[i].x, w[i].y, w[i].z, w[i].w};
      detail::Unroll<4>([&]<int k>() {
        const float2 f = __half22float2(detail::U32AsHalf2(u[k]));
        v[8 * i + 2 * k] = f.x;
        v[8 * i + 2 * k + 1] = f.y;
      });
    });
  } else {
    detail::Unroll<kTile>([&]<int q>() { v[q] = __half2float(x[q]); });
  }
}

template <>
__device__ __forceinline__ void LoadTile<float>(const float* x, bool vector_load,
                                                float (&v)[kTile]) {
  if (vector_load) {
    const float4* p = reinterpret_cast<const float4*>(x);
    detail::Unroll<4>([&]<int i>() {
      const float4 f = p[i];
      v[4 * i] = f.x;
      v[4 * i + 1] = f.y;
      v[4 * i + 2] = f.z;
      v[4 * i + 3] = f.w;
    });
  } else {
    detail::Unroll<kTile>([&]<int q>() { v[q] = x[q]; });
  }
}

__device__ __forceinline__ void StoreTile(float* x, bool vector_store, const float (&v)[kTile]) {
  if (vector_store) {
    detail::Unroll<4>([&]<int i>() {
      reinterpret_cast<float4*>(x)[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
    });
  } else {
    detail::Unroll<kTile>([&]<int q>() { x[q] = v[q]; });
  }
}

// The tile's butterfly stages over its index bits t = first..3 in increasing order (the CPU's
// h = 1, 2, 4, ... order), each the CPU's (a+b, a−b) on the same pairs.
__device__ __forceinline__ void TileButterflies(float (&v)[kTile], int first) {
  detail::Unroll<4>([&]<int t>() {
    constexpr int kH = 1 << t;
    if (t >= first) {
      detail::Unroll<kTile / 2>([&]<int i>() {
        constexpr int kLo = (i / kH) * 2 * kH + i % kH;
        const float a = v[kLo];
        const float b = v[kLo + kH];
        v[kLo] = a + b;
        v[kLo + kH] = a - b;
      });
    }
  });
}

}  // namespace bitloom::kernels::cuda::detail
