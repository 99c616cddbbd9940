// Randomized Hadamard rotation of a few activation rows (see hadamard_rotation.h): a
// register-tiled kernel that may spread a row over a thread-block cluster, and the original
// one-block-per-row kernel for the shapes the tiled one does not cover. Both perform the CPU's
// operations in the CPU's order, so their fp32 results equal HadamardRotation::Apply() bit for bit.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "device_properties.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/scalar_codec.h"  // ScalarGridCenter
#include "dependent_launch.cuh"
#include "device_util.cuh"
#include "block_reduce.cuh"
#include "gated_activation.cuh"
#include "paged_attention.cuh"  // MergeDecodeSplit
#include "hadamard_rotation_tiled.cuh"
#include "tiled_layout.cuh"  // QuadClassWeight, the offset terms
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float LoadAsFloat(const T* p);
template <>
__device__ __forceinline__ float LoadAsFloat<float>(const float* p) {
  return *p;
}
template <>
__device__ __forceinline__ float LoadAsFloat<__half>(const __half* p) {
  return __half2float(*p);
}

template <typename T>
__device__ __forceinline__ void StoreFromFloat(T* p, float v);
template <>
__device__ __forceinline__ void StoreFromFloat<float>(float* p, float v) {
  *p = v;
}
template <>
__device__ __forceinline__ void StoreFromFloat<__half>(__half* p, float v) {
  *p = __float2half_rn(v);
}

struct RotateArgs {
  int64_t n, p, l;
  int log_l;  // log2(L)
  uint64_t seed;
  bool mix;  // p > 1 and B is a Hadamard matrix
  float norm;
  const int8_t* base;  // [p, p]
  const void* x;
  int64_t x_stride;
  void* out;
  int64_t out_stride;
  const float* up;  // gated input (x is the gate), or null
  int64_t up_stride;
  Activation activation;
  RotateNormInput rms;  // residual RMSNorm input when rms.residual is set (x is the residual)
  float* offset_terms;  // HadamardRotateParams::offset_terms, or null
  int64_t offset_terms_stride;
};

// The tiled GEMV's offset terms (HadamardRotateParams::offset_terms) of one fp16 output row, read
// back once every block of the row has stored its part (the caller's barrier): warp w of block
// `rank` (of c per row) takes groups rank + c·w, rank + c·(w + warps), ..., four at a time so that
// their loads go out together; lane l reads columns 4l .. 4l + 3 (quad l mod 8 of its t-quad), the
// quads' sums meet over l, l + 8, l + 16, l + 24, and lanes 0..7 weigh and add them.
__device__ __forceinline__ void WriteOffsetTerms(const __half* row, int groups, int rank, int c, float* terms,
                                                 int64_t stride) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int u = lane & 7;
  const float w2 = detail::QuadClassWeight(detail::kOffsetTermBits[0], u);
  const float w3 = detail::QuadClassWeight(detail::kOffsetTermBits[1], u);
  const int step = c * warps;
  for (int g0 = rank + c * warp; g0 < groups; g0 += 4 * step) {
    float s[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[i] = 0.0f;
      if (g0 + i * step < groups) {
        const uint2 w = __ldcg(reinterpret_cast<const uint2*>(row + (g0 + i * step) * 128 + 4 * lane));
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&w.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&w.y));
        s[i] = (a.x + a.y) + (b.x + b.y);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[i] += __shfl_xor_sync(0xFFFFFFFFu, s[i], 8);
      s[i] += __shfl_xor_sync(0xFFFFFFFFu, s[i], 16);
      float plain = s[i], k2 = s[i] * w2, k3 = s[i] * w3;
#pragma unroll
      for (int o = 1; o < 8; o <<= 1) {
        plain += __shfl_xor_sync(0xFFFFFFFFu, plain, o);
        k2 += __shfl_xor_sync(0xFFFFFFFFu, k2, o);
        k3 += __shfl_xor_sync(0xFFFFFFFFu, k3, o);
      }
      const int g = g0 + i * step;
      if (lane == 0 && g < groups) {
        terms[g * stride] = fmaf(1024.0f, k2, ScalarGridCenter(detail::kOffsetTermBits[0]) * plain);
        terms[(groups + g) * stride] = fmaf(1024.0f, k3, ScalarGridCenter(detail::kOffsetTermBits[1]) * plain);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One block per row: the fallback for every shape the register-tiled kernel does not cover (p not
// 1 or a listed Paley order, the identity base, L < 16) and its reference.
//
// Layout: one thread block per row; the row lives in shared memory as fp32 [p][L] for the whole
// transform (n·4 bytes, plus p·p int8 for the base matrix).
//   1. load x·D (signs from SplitMix64, regenerated per element: no sign table in memory);
//   2. log2(L) butterfly stages over the p segments, one __syncthreads per stage, each stage the
//      CPU's (a+b, a−b) on the same pairs, so fp32 results are bit-identical to Fwht();
//   3. each output (i, j) = Σ_k ±y[k][j] in the CPU's order k = 0..p−1, times norm, converted and
//      stored; the tail [n, out_stride) is zero-filled.
// kThreads = 1024 for wide rows: stage 2 has n/2 butterflies (14336 for n = 28672), so 14 per
// thread per stage; 256 for narrow rows, where more threads would only wait at the barriers.
template <typename Tin, typename Tout>
__global__ void HadamardRotateKernel(RotateArgs a) {
  extern __shared__ float row[];  // [n] fp32, then [p·p] int8 when mixing
  int8_t* base = reinterpret_cast<int8_t*>(row + a.n);
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  const Tin* x = static_cast<const Tin*>(a.x) + blockIdx.x * a.x_stride;
  const float* up = a.up == nullptr ? nullptr : a.up + blockIdx.x * a.up_stride;
  Tout* out = static_cast<Tout*>(a.out) + blockIdx.x * a.out_stride;
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;

  const bool rms = a.rms.residual != nullptr;
  float* residual = rms ? a.rms.residual + blockIdx.x * a.rms.residual_stride : nullptr;
  const float* delta =
      rms && a.rms.delta != nullptr ? a.rms.delta + blockIdx.x * a.rms.delta_stride : nullptr;
  double sum_sq = 0.0;
  for (int64_t i = tid; i < a.n; i += nthreads) {
    float v;
    if (rms) {
      v = residual[i];
      if (delta != nullptr) {
        v = __fadd_rn(v, delta[i]);
        residual[i] = v;
      }
      sum_sq += static_cast<double>(v) * static_cast<double>(v);
      v = __fmul_rn(v, __fadd_rn(a.rms.weight[i], a.rms.weight_offset));
    } else {
      v = LoadAsFloat(x + i);
      if (up != nullptr) v = detail::Gated(a.activation, v, up[i]);
    }
    row[i] = (detail::SplitMix64At(a.seed, i) >> 63) ? -v : v;  // exact: the CPU multiplies by ±1
  }
  if (a.mix) {
    for (int64_t i = tid; i < a.p * a.p; i += nthreads) base[i] = a.base[i];
  }
  // The row's 1/rms multiplies the outputs (R is linear); BlockSum also orders the row's stores.
  const float scale = rms ? a.norm * detail::InvRms(detail::BlockSum(sum_sq), a.n, a.rms.eps) : a.norm;
  __syncthreads();

  // Butterfly k of a stage: segment k / (L/2), then within it pair (j, j+h) with j = blk·2h + off.
  // 32-bit indices and shifts (L and h are powers of two): 64-bit division is a long subroutine.
  const int n = static_cast<int>(a.n);
  const int log_half_l = a.log_l - 1;
  for (int log_h = 0; log_h < a.log_l; ++log_h) {
    const int h = 1 << log_h;
    for (int k = tid; k < n / 2; k += nthreads) {
      const int seg = k >> log_half_l;
      const int kk = k & ((1 << log_half_l) - 1);
      const int j = (seg << a.log_l) + ((kk >> log_h) << (log_h + 1)) + (kk & (h - 1));
      const float u = row[j];
      const float v = row[j + h];
      row[j] = u + v;
      row[j + h] = u - v;
    }
    __syncthreads();
  }

  const int p = static_cast<int>(a.p);
  for (int e = tid; e < n; e += nthreads) {
    float v;
    if (a.mix) {
      const int i = e >> a.log_l;
      const int j = e & ((1 << a.log_l) - 1);
      const int8_t* b = base + i * p;
      float acc = 0.0f;
      for (int k = 0; k < p; ++k) {
        const float y = row[(k << a.log_l) + j];
        acc = b[k] > 0 ? acc + y : acc - y;
      }
      v = acc;
    } else {
      v = row[e];
    }
    StoreFromFloat(out + e, v * scale);
  }
  for (int64_t e = a.n + tid; e < a.out_stride; e += nthreads) StoreFromFloat(out + e, 0.0f);
  if constexpr (std::is_same_v<Tout, __half>) {
    if (a.offset_terms != nullptr) {
      __syncthreads();  // the row's stores
      WriteOffsetTerms(out, n / 128, 0, 1, a.offset_terms + blockIdx.x, a.offset_terms_stride);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Register-tiled schedule.

constexpr int kTiledMaxThreads = 512;  // caps registers at 128 per thread (p = 60 holds 60 + 6)
constexpr int kMaxClusterBlocks = 8;   // the portable cluster size
// Default chunk of a decode row: 2048 elements (128 threads, one warp per sub-partition), 512 (32
// threads, up to 8 blocks) from 4096 wide: in the H200 8B decode step, 4096-wide rotations on
// clusters of 8 instead of 2 made batch 1 2.755 -> 2.71-2.73 ms and batch 4 3.38 -> 3.26-3.28 ms.
constexpr int kElementsPerBlock = 2048;
constexpr int kWideElementsPerBlock = 512;
constexpr int64_t kWideRow = 4096;

// Outputs per mixing task for base order p: the task reads its column's p values once and does
// R·p adds; R < p where a width has few columns (L = 16) or to balance warps (p = 28).
__host__ __device__ constexpr int MixRowsPerTask(int p) {
  return p == 28 ? 14 : (p == 36 || p == 60) ? 6 : p;
}

// What pass 0 of the tiled kernel reads (a template parameter, so that each instantiation holds
// only its own path: a decode step launches rotations of three kinds per layer, and the
// instruction fetch of a kernel's code after the GEMV ahead has left the SM's caches costs about
// 0.1 µs per KB of straight-line code (gpu_launch_floor_bench, H200)).
enum class TiledInput {
  kRows,    // x
  kGated,   // act(x) · up
  kNorm,    // RMSNorm(residual + delta)
  kSplits,  // the merge of the attention splits
};

bool IsTiledOrder(int64_t p) {
  return p == 1 || p == 12 || p == 20 || p == 28 || p == 36 || p == 60;
}

struct TiledArgs {
  const void* x;        // [batch, x_stride] of Tin
  int64_t x_stride;     // elements
  void* out;            // [batch, out_stride] of Tout
  int64_t out_stride;   // elements
  uint64_t seed;        // SplitMix64 seed of the signs
  float norm;           // 1/√(p·L)
  int n;                // p·L
  int log_l;            // log2 L
  int cluster;          // C: blocks per row, rank = blockIdx.x % C
  int log_sub;          // log2 of the transform length inside a chunk: log2 L (p > 1), log2(L/C)
  int work_floats;      // the work buffer [n/C] fp32, or 0 when a single pass needs none
  int recv_stride;      // p > 1: row stride of recv [p][recv_stride]; p = 1: groups per block
  int log_gpb;          // p = 1, C > 1: log2(groups per block)
  int cols;             // p > 1: columns per block (the last block may own fewer)
  uint32_t cols_magic;  // ceil(2^32 / cols), C > 1: owner of column j = umulhi(j, magic)
  bool vector_load;     // x (and up) rows are 16-byte aligned: pass 0 loads 16-byte vectors
  const float* up;      // gated input (x is the gate), or null
  int64_t up_stride;    // elements
  Activation activation;
  RotateNormInput rms;  // residual RMSNorm input when rms.residual is set (x is the residual)
  DecodeAttentionSplits splits;  // attention partials when splits.acc is set (row = sequence)
  int merged_at;                 // splits: where the merged chunk [n/C] fp32 starts in shared memory
  float* offset_terms;           // HadamardRotateParams::offset_terms, or null
  int64_t offset_terms_stride;
};

// Pass 0's input tile of a residual-RMSNorm rotation: residual += delta (stored back), Σr² into
// sum_sq (double, as LaunchResidualRmsNorm), then r ⊙ (w + offset), w the tile's norm weights
// (loaded by the caller); 1/rms comes later.
__device__ __forceinline__ void LoadNormTile(const RotateNormInput& rms, int64_t row, int e0,
                                             bool vector_load, const float (&w)[detail::kTile],
                                             float (&v)[detail::kTile], double& sum_sq) {
  float* residual = rms.residual + row * rms.residual_stride + e0;
  detail::LoadTile(residual, vector_load, v);
  if (rms.delta != nullptr) {
    float d[detail::kTile];
    detail::LoadTile(rms.delta + row * rms.delta_stride + e0, vector_load, d);
    detail::Unroll<detail::kTile>([&]<int q>() { v[q] = __fadd_rn(v[q], d[q]); });
    detail::StoreTile(residual, vector_load, v);
  }
  detail::Unroll<detail::kTile>([&]<int q>() {
    sum_sq += static_cast<double>(v[q]) * static_cast<double>(v[q]);
    v[q] = __fmul_rn(v[q], __fadd_rn(w[q], rms.weight_offset));
  });
}

// Outputs i = kI0..kI0+R−1 of one column: Σ_k ±y[k] in the CPU's order k = 0..p−1 from 0.0f,
// the signs compile-time, then times norm.
template <int P, int R, int kI0, typename Tout>
__device__ __forceinline__ void MixRows(const float (&y)[P], float norm, Tout* out, int l,
                                        int col) {
  float acc[R];
  detail::Unroll<R>([&]<int r>() { acc[r] = 0.0f; });
  detail::Unroll<P>([&]<int k>() {
    detail::Unroll<R>([&]<int r>() {
      if constexpr (detail::kPaleySigns<P>.neg[kI0 + r][k]) {
        acc[r] = acc[r] - y[k];
      } else {
        acc[r] = acc[r] + y[k];
      }
    });
  });
  detail::Unroll<R>([&]<int r>() { StoreFromFloat(out + (kI0 + r) * l + col, acc[r] * norm); });
}

template <int P, int R, typename Tout, int... kG>
__device__ __forceinline__ void MixGroup(int g, const float (&y)[P], float norm, Tout* out, int l,
                                         int col, std::integer_sequence<int, kG...>) {
  ((g == kG ? MixRows<P, R, kG * R>(y, norm, out, l, col) : void()), ...);
}

// Layout (one row per C blocks, block `rank` = blockIdx.x % C of row blockIdx.x / C):
//   chunk    the row's elements [rank·n/C, (rank+1)·n/C): whole segments when p > 1 (C | p), a
//            1/C slice of the single Walsh–Hadamard transform when p = 1 (C a power of two).
//   phase 1  tiles of 16 elements whose chunk indices differ in bits [b, b+4); a thread does those
//            4 butterfly stages in registers. Passes b = 0, 4, 8, ... with the last one shifted to
//            end at the chunk's top bit (its stages below 4·pass are already done and skipped).
//            Pass 0 loads x (16 contiguous elements, 16-byte loads when aligned; with a gated
//            input also 16 of up, and forms act(x)·up; with a norm input the residual tile,
//            delta added and stored back, Σr² summed, times the norm weight) and applies the
//            SplitMix64 signs; between passes the tiles go through `work` (shared [n/C] fp32,
//            SwizzleWork: conflict-free for the pass-0 16-byte stores and the strided passes) and
//            one __syncthreads. The last pass stores each element where phase 2 reads it:
//              p > 1:  recv[k][j − colstart] of the block owning column j (columns split in C
//                      contiguous ranges of `cols`), row stride cols + 2^b when b < 5 so the
//                      tile stores spread over the banks;
//              p = 1, C > 1: recv[q][g − rank·gpb] of the block owning group g, where element
//                      w = q·2^(log L − 4) + g (phase 2 tiles span the top 4 index bits);
//              p = 1, C = 1: the output itself (no phase 2).
//            With C > 1 these are st.shared::cluster stores into peers' memory, after a first
//            cluster barrier (arrived at entry, waited just before) guarantees every peer runs.
//   phase 2  after one cluster barrier (__syncthreads when C = 1), local reads only:
//              p > 1:  task (g, j): y[k] = recv[k][j] for k < p into registers, outputs
//                      i = g·R .. g·R+R−1 with B compile-time (one FADD per term), stored.
//              p = 1:  task g: the tile recv[0..15][g], the remaining log2 C stages, stored.
//            No block reads a peer after that barrier, so blocks may exit without another.
//   norm     (norm input only) each warp's Σr² goes to shared memory after pass 0; the outputs
//            are scaled by norm·inv_rms instead of norm. C = 1: every thread sums the warp
//            partials (after pass 0's barrier; the plan refuses p = 1, C = 1 with one pass, whose
//            only pass stores the outputs). C > 1: after the passes, threads 0..C−1 push the
//            block's total into slot `rank` of every peer (st.shared::cluster, before the
//            cluster barrier that precedes phase 2), and phase 2 sums the C slots in rank order.
//   rank 0 zero-fills the output columns [n, out_stride).
// The thread count covers the larger phase's task count (rounded to a warp, at most 512; more
// tasks loop). Shared memory: 4·(n/C + recv) bytes, 32 KiB for n = 28672 at C = 7.
template <typename Tin, typename Tout, int P, TiledInput kIn, int kLogSub, int kLogC, bool kTerms = false>
__global__ void __launch_bounds__(kTiledMaxThreads) HadamardRotateTiledKernel(TiledArgs a) {
  static_assert(P == 1 || detail::IsHadamard(detail::kPaleySigns<P>), "no Paley matrix of order P");
  static_assert(kLogC < 0 || (P == 1 && kLogSub > 0), "a constant cluster needs p = 1 and constant passes");
  extern __shared__ float4 tiled_smem[];
  float* work = reinterpret_cast<float*>(tiled_smem);
  float* recv = work + a.work_floats;
  // With a constant shape (p = 1, kLogSub and kLogC) the plan's fields follow from it and are
  // compile-time constants: L = 2^(kLogSub + kLogC), chunk 2^kLogSub, 2^(kLogSub − 4) groups per block.
  constexpr bool kShape = kLogC >= 0;
  const int c = kShape ? 1 << kLogC : a.cluster;
  const int log_l = kShape ? kLogSub + kLogC : a.log_l;
  const int log_gpb = kShape ? kLogSub - 4 : a.log_gpb;
  const bool clustered = c > 1;
  const int rank = static_cast<int>(blockIdx.x) % c;
  const int row = static_cast<int>(blockIdx.x) / c;
  if (clustered) detail::ClusterArriveRelaxed();
  detail::AllowDependentLaunch();
  const int chunk = kShape ? 1 << kLogSub : a.n / c;
  const int chunk0 = rank * chunk;
  const int tasks = chunk / detail::kTile;
  constexpr bool rms = kIn == TiledInput::kNorm;

  // The constant inputs of the thread's first pass-0 tile (u0 = 16·threadIdx.x), its signs and
  // norm weights, are formed while the kernels ahead run; only x (or the residual) waits for them.
  uint32_t first_signs = 0;
  float first_w[detail::kTile];
  detail::Unroll<detail::kTile>([&]<int q>() { first_w[q] = 0.0f; });
  if (static_cast<int>(threadIdx.x) < tasks) {
    const int e0 = chunk0 + detail::kTile * static_cast<int>(threadIdx.x);
    first_signs = detail::TileSignBits(a.seed, e0);
    if constexpr (rms) detail::LoadTile(a.rms.weight + e0, a.vector_load, first_w);
  }
  detail::WaitForPredecessorsAfter(first_signs ^ __float_as_uint(first_w[0]));

  const Tin* x = static_cast<const Tin*>(a.x) + row * a.x_stride;
  const float* up = kIn == TiledInput::kGated ? a.up + row * a.up_stride : nullptr;
  Tout* out = static_cast<Tout*>(a.out) + row * a.out_stride;
  __shared__ double warp_sum_sq[kTiledMaxThreads / 32];
  __shared__ double rank_sum_sq[kMaxClusterBlocks];
  double sum_sq = 0.0;
  float scale = a.norm;  // norm·inv_rms once the row's Σr² is known
  const int l = 1 << log_l;
  const int log_sub = kLogSub > 0 ? kLogSub : a.log_sub;
  const int npass = (log_sub + 3) / 4;
  const uint32_t recv_addr = detail::SharedAddress(recv);
  auto block_sum_sq = [&] {
    double total = 0.0;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += warp_sum_sq[w];
    return total;
  };

  if constexpr (kIn == TiledInput::kSplits) {
    // The block's chunk of the attention output, one element per thread: each merges its
    // (head, dim) over the splits with the combine kernel's arithmetic, the splits' loads in flight
    // together, so the merge costs a few L2 round trips however few tasks the passes have.
    for (int e = threadIdx.x; e < chunk; e += blockDim.x) {
      const int g = chunk0 + e;
      work[a.merged_at + e] =
          detail::MergeDecodeSplit(a.splits, static_cast<int>(row), g / a.splits.head_dim, g % a.splits.head_dim);
    }
    __syncthreads();
  }

  auto run_pass = [&](const int pass) {
    const bool last = pass + 1 == npass;
    const int b = min(4 * pass, log_sub - 4);
    const int first = 4 * pass - b;
    if (last && clustered) detail::ClusterWaitAcquire();  // every peer has started
    if (P == 1 && !clustered && rms && last) {
      scale = a.norm * detail::InvRms(block_sum_sq(), a.n, a.rms.eps);  // pass 0's partials are visible
    }
    for (int t = threadIdx.x; t < tasks; t += blockDim.x) {
      // The tile's elements u0 + (q << b) = u0 ^ (q << b) (u0 is zero in bits b..b+3), and
      // SwizzleWork is linear over XOR: their work words are sw0 ^ SwizzleWork(q << b), one
      // LOP3 each, and none at all once b is a constant (kLogSub).
      const int u0 = ((t >> b) << (b + 4)) | (t & ((1 << b) - 1));
      const int sw0 = detail::SwizzleWork(u0);
      const bool first_tile = pass == 0 && t == static_cast<int>(threadIdx.x);
      float v[detail::kTile];
      if (kIn == TiledInput::kNorm && pass == 0) {
        float w[detail::kTile];
        if (first_tile) {
          detail::Unroll<detail::kTile>([&]<int q>() { w[q] = first_w[q]; });
        } else {
          detail::LoadTile(a.rms.weight + chunk0 + u0, a.vector_load, w);
        }
        LoadNormTile(a.rms, row, chunk0 + u0, a.vector_load, w, v, sum_sq);
      } else if (kIn == TiledInput::kSplits && pass == 0) {  // merged before the passes
        detail::Unroll<detail::kTile / 4>([&]<int i>() {
          const float4 m = *reinterpret_cast<const float4*>(work + a.merged_at + u0 + 4 * i);
          v[4 * i] = m.x, v[4 * i + 1] = m.y, v[4 * i + 2] = m.z, v[4 * i + 3] = m.w;
        });
      } else if (pass == 0) {  // b = 0: u0 = 16·t
        detail::LoadTile(x + chunk0 + u0, a.vector_load, v);
        if constexpr (kIn == TiledInput::kGated) {
          float w[detail::kTile];
          detail::LoadTile(up + chunk0 + u0, a.vector_load, w);
          detail::Unroll<detail::kTile>([&]<int q>() { v[q] = detail::Gated(a.activation, v[q], w[q]); });
        }
      }
      if (pass == 0) {
        detail::ApplyTileSigns(v, first_tile ? first_signs : detail::TileSignBits(a.seed, chunk0 + u0));
      } else {
        detail::Unroll<detail::kTile>([&]<int q>() { v[q] = work[sw0 ^ detail::SwizzleWork(q << b)]; });
      }
      detail::TileButterflies(v, first);
      if (!last) {
        if (pass == 0) {
          detail::Unroll<detail::kTile / 4>([&]<int i>() {
            *reinterpret_cast<float4*>(work + (sw0 ^ detail::SwizzleWork(4 * i))) =
                make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
          });
        } else {
          detail::Unroll<detail::kTile>([&]<int q>() { work[sw0 ^ detail::SwizzleWork(q << b)] = v[q]; });
        }
      } else if constexpr (P == 1) {
        if (!clustered) {
          detail::Unroll<detail::kTile>(
              [&]<int q>() { StoreFromFloat(out + u0 + (q << b), v[q] * scale); });
        } else {
          const int log_g = log_l - 4;
          detail::Unroll<detail::kTile>([&]<int q>() {
            const int w = chunk0 + u0 + (q << b);
            const int g = w & ((1 << log_g) - 1);
            const int owner = g >> log_gpb;
            const int slot = ((w >> log_g) << log_gpb) + (g & ((1 << log_gpb) - 1));
            detail::StoreSharedCluster(detail::MapSharedRank(recv_addr + 4 * slot, owner), v[q]);
          });
        }
      } else {
        const int k = (chunk0 + u0) >> log_l;  // the tile's segment (b + 4 <= log L)
        const int j0 = (chunk0 + u0) & (l - 1);
        if (!clustered) {
          detail::Unroll<detail::kTile>([&]<int q>() { recv[k * a.recv_stride + j0 + (q << b)] = v[q]; });
        } else {
          detail::Unroll<detail::kTile>([&]<int q>() {
            const int j = j0 + (q << b);
            const int owner = static_cast<int>(__umulhi(static_cast<uint32_t>(j), a.cols_magic));
            const int slot = k * a.recv_stride + j - owner * a.cols;
            detail::StoreSharedCluster(detail::MapSharedRank(recv_addr + 4 * slot, owner), v[q]);
          });
        }
      }
    }
    if (pass == 0 && rms) {
      sum_sq = detail::WarpSum(sum_sq);
      if ((threadIdx.x & 31) == 0) warp_sum_sq[threadIdx.x >> 5] = sum_sq;
    }
    if (!last) __syncthreads();
  };
  if constexpr (kLogSub > 0) {
    detail::Unroll<(kLogSub + 3) / 4>([&]<int pass>() { run_pass(pass); });
  } else {
    for (int pass = 0; pass < npass; ++pass) run_pass(pass);
  }

  if (rms && clustered) {
    __syncthreads();  // every warp's partial (pass 0 may have been the only pass)
    if (static_cast<int>(threadIdx.x) < c) {
      const uint32_t slot = detail::SharedAddress(&rank_sum_sq[rank]);
      detail::StoreSharedCluster(detail::MapSharedRank(slot, threadIdx.x), block_sum_sq());
    }
  }
  if (P > 1 || clustered) {
    if (clustered) {
      detail::ClusterArriveRelease();
      detail::ClusterWaitAcquire();
    } else {
      __syncthreads();
    }
    if (rms) {
      double total = 0.0;
      if (clustered) {
        for (int r = 0; r < c; ++r) total += rank_sum_sq[r];
      } else {
        total = block_sum_sq();
      }
      scale = a.norm * detail::InvRms(total, a.n, a.rms.eps);
    }
  }

  if constexpr (P == 1) {
    if (clustered) {
      const int gpb = 1 << log_gpb;
      const int log_g = log_l - 4;
      const int first = 4 - (log_l - log_sub);  // the log2 C stages the chunks could not do
      for (int gl = threadIdx.x; gl < gpb; gl += blockDim.x) {
        float v[detail::kTile];
        detail::Unroll<detail::kTile>([&]<int q>() { v[q] = recv[(q << log_gpb) + gl]; });
        detail::TileButterflies(v, first);
        const int g = rank * gpb + gl;
        detail::Unroll<detail::kTile>(
            [&]<int q>() { StoreFromFloat(out + (q << log_g) + g, v[q] * scale); });
      }
    }
  } else {
    constexpr int kR = MixRowsPerTask(P);
    constexpr int kGroups = P / kR;
    static_assert(P % kR == 0);
    const int col0 = rank * a.cols;
    const int cols_here = min(a.cols, l - col0);
    for (int task = threadIdx.x; task < cols_here * kGroups; task += blockDim.x) {
      const int g = task / cols_here;
      const int jl = task - g * cols_here;
      float y[P];
      detail::Unroll<P>([&]<int k>() { y[k] = recv[k * a.recv_stride + jl]; });
      MixGroup<P, kR>(g, y, scale, out, l, col0 + jl, std::make_integer_sequence<int, kGroups>{});
    }
  }
  if (rank == 0) {
    for (int64_t e = a.n + threadIdx.x; e < a.out_stride; e += blockDim.x)
      StoreFromFloat(out + e, 0.0f);
  }
  if constexpr (kTerms) {
    static_assert(std::is_same_v<Tout, __half>, "offset terms are taken of fp16 rows");
    // Every block's stores of the row, visible to the whole cluster (release / acquire).
    if (clustered) {
      detail::ClusterArriveRelease();
      detail::ClusterWaitAcquire();
    } else {
      __syncthreads();
    }
    WriteOffsetTerms(out, a.n / 128, rank, c, a.offset_terms + row, a.offset_terms_stride);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

// The rows pass 0 reads: x, or the residual of a norm input.
const void* InputRows(const HadamardRotateParams& p) {
  return p.norm.residual != nullptr ? p.norm.residual : p.x;
}
int64_t InputStride(const HadamardRotateParams& p) {
  return p.norm.residual != nullptr ? p.norm.residual_stride : p.x_stride;
}

int64_t SharedBytes(const RotationDesc& r) {
  const bool mix = r.base_order > 1 && r.base_is_hadamard;
  return r.n * 4 + (mix ? r.base_order * r.base_order : 0);
}

int64_t MaxSharedBytes(int sm) {
  if (sm >= 90) return 232448;  // 227 KiB opt-in
  if (sm == 80 || sm == 87) return 166912;
  return 101376;  // sm_86, sm_89
}

int Log2(int64_t v) {  // v a power of two
  int k = 0;
  while ((int64_t{1} << k) < v) ++k;
  return k;
}

absl::Status Validate(const HadamardRotateParams& p) {
  const RotationDesc& r = p.rotation;
  if (r.n < 1) return absl::InvalidArgumentError("LaunchHadamardRotate: rotation.n must be >= 1");
  if (r.base_order < 1 || r.pow2_order < 1 || r.base_order * r.pow2_order != r.n ||
      (r.pow2_order & (r.pow2_order - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: p=", r.base_order,
                                                   " x L=", r.pow2_order, " does not give n=", r.n,
                                                   " with L a power of two"));
  }
  if (r.base_order > 1 && r.base_is_hadamard && r.base == nullptr) {
    return absl::InvalidArgumentError("LaunchHadamardRotate: rotation.base is null but p > 1");
  }
  if (p.offset_terms != nullptr &&
      (p.out_type != ActivationType::kF16 || r.n % 128 != 0 || p.offset_terms_stride < p.batch ||
       reinterpret_cast<uintptr_t>(p.out) % 8 != 0 || p.out_stride % 4 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchHadamardRotate: offset_terms need out_type kF16, n a multiple of 128 (n = ", r.n,
        "), out 8-byte aligned with out_stride a multiple of 4 (", p.out_stride,
        ") and offset_terms_stride >= batch (", p.offset_terms_stride, " against ", p.batch, ")"));
  }
  const RotateNormInput& rms = p.norm;
  const DecodeAttentionSplits& sp = p.splits;
  if (sp.acc != nullptr) {
    if (p.x != nullptr || p.up != nullptr || rms.residual != nullptr) {
      return absl::InvalidArgumentError(
          "LaunchHadamardRotate: an attention input (splits.acc set) takes no x, up or norm.residual");
    }
    if (sp.ml == nullptr || sp.seq_lens == nullptr || sp.num_splits < 2 || sp.split_len < 1 ||
        (sp.head_dim != 64 && sp.head_dim != 128 && sp.head_dim != 256) ||
        int64_t{sp.num_heads} * sp.head_dim != r.n || p.x_type != ActivationType::kF32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LaunchHadamardRotate: splits (num_heads ", sp.num_heads, ", head_dim ", sp.head_dim, ", num_splits ",
          sp.num_splits, ", split_len ", sp.split_len,
          ") must have ml and seq_lens, head_dim 64/128/256, num_heads·head_dim = n = ", r.n,
          ", num_splits >= 2, split_len >= 1 and x_type kF32"));
    }
  } else if (rms.residual != nullptr) {
    if (p.x != nullptr || p.up != nullptr) {
      return absl::InvalidArgumentError(
          "LaunchHadamardRotate: a norm input (norm.residual set) takes no x and no up");
    }
    if (rms.weight == nullptr)
      return absl::InvalidArgumentError("LaunchHadamardRotate: norm.weight must be non-null");
    if (rms.residual_stride < r.n || (rms.delta != nullptr && rms.delta_stride < r.n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LaunchHadamardRotate: norm.residual_stride ", rms.residual_stride,
          " and norm.delta_stride ", rms.delta_stride, " must be >= n = ", r.n));
    }
    if (p.x_type != ActivationType::kF32) {
      return absl::InvalidArgumentError("LaunchHadamardRotate: a norm input needs x_type kF32");
    }
  } else if (p.x == nullptr) {
    return absl::InvalidArgumentError("LaunchHadamardRotate: x must be non-null");
  }
  if (p.out == nullptr)
    return absl::InvalidArgumentError("LaunchHadamardRotate: out must be non-null");
  if (p.up != nullptr && p.x_type != ActivationType::kF32) {
    return absl::InvalidArgumentError(
        "LaunchHadamardRotate: a gated input (up set) needs x_type kF32 (the gate)");
  }
  if (p.up != nullptr && p.up_stride < r.n) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: up_stride ", p.up_stride,
                                                   " must be >= n = ", r.n));
  }
  if ((rms.residual == nullptr && sp.acc == nullptr && p.x_stride < r.n) || p.out_stride < r.n) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: x_stride ", p.x_stride,
                                                   " and out_stride ", p.out_stride,
                                                   " must be >= n = ", r.n));
  }
  if (r.n > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: n ", r.n, " too large"));
  }
  if (p.batch < 1 || p.batch > kMaxRotateBatch) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: batch ", p.batch,
                                                   " outside [1, ", kMaxRotateBatch, "]"));
  }
  if (p.cluster_blocks < 0 || p.cluster_blocks > kMaxClusterBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: cluster_blocks ",
                                                   p.cluster_blocks, " outside [0, ",
                                                   kMaxClusterBlocks, "]"));
  }
  if (p.cluster_blocks != 0 && p.schedule == RotateSchedule::kRowPerBlock) {
    return absl::InvalidArgumentError(
        "LaunchHadamardRotate: cluster_blocks applies to the register-tiled schedule only");
  }
  return absl::OkStatus();
}

// The register-tiled kernel's configuration for one shape (see its layout comment).
struct TiledPlan {
  int cluster = 1;
  int threads = 0;
  int log_sub = 0;
  int work_floats = 0;
  int recv_floats = 0;
  int recv_stride = 0;
  int log_gpb = 0;
  int cols = 0;
  uint32_t cols_magic = 0;
  int merged_at = 0;  // attention input: the merged chunk's offset in shared memory, in floats
  int64_t shared_bytes = 0;
};

// Whether cluster size c can run the shape: C | p for p > 1 with every block owning a column,
// a power of two leaving chunks of >= 16 for p = 1.
bool ClusterFits(int64_t p, int64_t l, int c) {
  if (p == 1) return (c & (c - 1)) == 0 && l / c >= detail::kTile;
  const int64_t cols = (l + c - 1) / c;
  return p % c == 0 && (c - 1) * cols < l;
}

int DefaultCluster(const RotationDesc& r, int sm) {
  if (sm < 90) return 1;
  const int64_t want =
      std::max<int64_t>(1, std::min<int64_t>(kMaxClusterBlocks,
                                             r.n / (r.n >= kWideRow ? kWideElementsPerBlock : kElementsPerBlock)));
  for (int c = static_cast<int>(want); c > 1; --c) {
    if (ClusterFits(r.base_order, r.pow2_order, c)) return c;
  }
  return 1;
}

// `norm`: the params carry a norm input, whose 1/rms is applied when the outputs are stored, which
// needs a barrier after pass 0: p = 1 on one block with a single pass has none. `attention`: the
// input is attention splits, merged into shared memory before pass 0 by a thread per element.
absl::Status PlanTiled(const RotationDesc& r, int sm, int cluster_request, bool norm, bool attention,
                       TiledPlan* plan) {
  const int64_t p = r.base_order;
  const int64_t l = r.pow2_order;
  if (!IsTiledOrder(p) || (p > 1 && !r.base_is_hadamard) || l < detail::kTile) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchHadamardRotate: the register-tiled schedule needs L >= 16 and p in {1, 12, 20, "
        "28, 36, 60} with a Paley base, not p=",
        p, " L=", l));
  }
  const int c = cluster_request != 0 ? cluster_request : DefaultCluster(r, sm);
  if (c > 1 && sm < 90) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: cluster_blocks ", c,
                                                   " needs sm_90, device is sm_", sm));
  }
  if (!ClusterFits(p, l, c)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: cluster_blocks ", c,
                                                   " does not split p=", p, " L=", l));
  }
  TiledPlan t;
  t.cluster = c;
  const int log_l = Log2(l);
  t.log_sub = p == 1 ? log_l - Log2(c) : log_l;
  const int64_t chunk = r.n / c;
  const int npass = (t.log_sub + 3) / 4;
  if (norm && p == 1 && c == 1 && npass == 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchHadamardRotate: the register-tiled schedule takes a norm input from n = 32 on, not ",
        r.n));
  }
  t.work_floats = npass > 1 ? static_cast<int>(chunk) : 0;
  int64_t tasks2 = 0;
  if (p == 1) {
    if (c > 1) {
      const int64_t gpb = (l / detail::kTile) / c;
      t.log_gpb = Log2(gpb);
      t.recv_stride = static_cast<int>(gpb);
      t.recv_floats = static_cast<int>(detail::kTile * gpb);
      tasks2 = gpb;
    }
  } else {
    t.cols = static_cast<int>((l + c - 1) / c);
    const int b_last = log_l - 4;
    t.recv_stride = t.cols + (b_last < 5 ? (1 << b_last) : 0);
    t.recv_floats = static_cast<int>(p) * t.recv_stride;
    if (c > 1) t.cols_magic = static_cast<uint32_t>(((uint64_t{1} << 32) + t.cols - 1) / t.cols);
    tasks2 = int64_t{t.cols} * (p / MixRowsPerTask(static_cast<int>(p)));
  }
  const int64_t tasks = std::max<int64_t>(chunk / detail::kTile, tasks2);
  t.threads = static_cast<int>(std::clamp<int64_t>((tasks + 31) / 32 * 32, 32, kTiledMaxThreads));
  t.shared_bytes = 4 * (int64_t{t.work_floats} + t.recv_floats);
  if (attention) {  // the merged chunk after the buffers, 16-byte aligned (pass 0 reads float4)
    t.merged_at = (t.work_floats + t.recv_floats + 3) / 4 * 4;
    t.shared_bytes = 4 * (int64_t{t.merged_at} + chunk);
    t.threads = static_cast<int>(std::clamp<int64_t>((chunk + 31) / 32 * 32, t.threads, kTiledMaxThreads));
  }
  if (t.shared_bytes > MaxSharedBytes(sm)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: ", t.shared_bytes,
                                                   " bytes of shared memory per block exceed sm_",
                                                   sm, "'s limit; use more cluster blocks"));
  }
  *plan = t;
  return absl::OkStatus();
}

// The schedule LaunchHadamardRotate runs on `sm`; `tiled` is filled when it is the tiled one.
absl::StatusOr<RotateSchedule> ChooseSchedule(int sm, const HadamardRotateParams& p,
                                              TiledPlan* tiled) {
  if (absl::Status s = Validate(p); !s.ok()) return s;
  if (p.schedule == RotateSchedule::kRowPerBlock) {
    if (p.splits.acc != nullptr) {
      return absl::InvalidArgumentError("LaunchHadamardRotate: an attention input needs the register-tiled schedule");
    }
    return RotateSchedule::kRowPerBlock;
  }
  if (p.cluster_blocks == 0 && p.batch >= kWholeRowBatch) {
    // Many rows: the fewest blocks per row that plan (shared memory, a divisor of p).
    for (int c = 1; c <= kMaxClusterBlocks; ++c) {
      if (c > 1 && sm < 90) break;
      if (PlanTiled(p.rotation, sm, c, p.norm.residual != nullptr, p.splits.acc != nullptr, tiled).ok()) {
        return RotateSchedule::kRegisterTiled;
      }
    }
  }
  // An attention input reads num_splits partials per element: spread a row over the most blocks
  // (SMs) that split it, so no SM's loads serialise the merge.
  if (p.splits.acc != nullptr && p.cluster_blocks == 0 && sm >= 90) {
    for (int c = kMaxClusterBlocks; c > 1; --c) {
      if (PlanTiled(p.rotation, sm, c, false, true, tiled).ok()) return RotateSchedule::kRegisterTiled;
    }
  }
  const absl::Status s =
      PlanTiled(p.rotation, sm, p.cluster_blocks, p.norm.residual != nullptr, p.splits.acc != nullptr, tiled);
  if (s.ok()) return RotateSchedule::kRegisterTiled;
  if (p.splits.acc != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchHadamardRotate: an attention input needs the register-tiled schedule, which cannot run n = ",
        p.rotation.n, ": ", s.message()));
  }
  if (p.schedule == RotateSchedule::kRegisterTiled || p.cluster_blocks != 0) return s;
  return RotateSchedule::kRowPerBlock;
}

template <typename Tin, typename Tout>
absl::Status LaunchRowPerBlock(const HadamardRotateParams& p, cudaStream_t stream) {
  const RotationDesc& r = p.rotation;
  RotateArgs a{r.n,          r.base_order,
               r.pow2_order, Log2(r.pow2_order),
               r.seed,       r.base_order > 1 && r.base_is_hadamard,
               r.norm,       r.base,
               InputRows(p),  InputStride(p),
               p.out,        p.out_stride,
               p.up,         p.up_stride,
               p.activation, p.norm,
               p.offset_terms, p.offset_terms_stride};
  const int64_t smem = SharedBytes(r);
  const int threads = r.n >= 4096 ? 1024 : 256;
  auto* kernel = &HadamardRotateKernel<Tin, Tout>;
  if (smem > 48 * 1024) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  return detail::LaunchKernel(
      {dim3(static_cast<unsigned>(p.batch)), dim3(threads), static_cast<size_t>(smem)}, stream,
      kernel, a);
}

// The tiled kernel for p's input kind (Validate() admits norm, attention and gated inputs with
// fp32 x only) and kLogSub (0: the plan's, at run time).
template <typename Tin, typename Tout, int P, int kLogSub, int kLogC, bool kTerms>
auto* TiledKernelForInput(const HadamardRotateParams& p) {
  auto* kernel = &HadamardRotateTiledKernel<Tin, Tout, P, TiledInput::kRows, kLogSub, kLogC, kTerms>;
  if constexpr (std::is_same_v<Tin, float>) {
    if (p.splits.acc != nullptr) {
      kernel = &HadamardRotateTiledKernel<Tin, Tout, P, TiledInput::kSplits, kLogSub, kLogC, kTerms>;
    } else if (p.norm.residual != nullptr) {
      kernel = &HadamardRotateTiledKernel<Tin, Tout, P, TiledInput::kNorm, kLogSub, kLogC, kTerms>;
    } else if (p.up != nullptr) {
      kernel = &HadamardRotateTiledKernel<Tin, Tout, P, TiledInput::kGated, kLogSub, kLogC, kTerms>;
    }
  }
  return kernel;
}

// The kernel of the input's kind; the offset terms' read-back is compiled only into the kernels that
// write them (fp16 outputs), so that the others keep their code.
template <typename Tin, typename Tout, int P, int kLogSub, int kLogC = -1>
auto* TiledKernelFor(const HadamardRotateParams& p) {
  if constexpr (std::is_same_v<Tout, __half>) {
    if (p.offset_terms != nullptr) return TiledKernelForInput<Tin, Tout, P, kLogSub, kLogC, true>(p);
  }
  return TiledKernelForInput<Tin, Tout, P, kLogSub, kLogC, false>(p);
}

template <typename Tin, typename Tout, int P>
absl::Status LaunchTiled(const HadamardRotateParams& p, const TiledPlan& plan,
                         cudaStream_t stream) {
  const RotationDesc& r = p.rotation;
  const int64_t elem = sizeof(Tin);
  TiledArgs a{};
  a.x = InputRows(p);
  a.x_stride = InputStride(p);
  a.out = p.out;
  a.out_stride = p.out_stride;
  a.seed = r.seed;
  a.norm = r.norm;
  a.n = static_cast<int>(r.n);
  a.log_l = Log2(r.pow2_order);
  a.cluster = plan.cluster;
  a.log_sub = plan.log_sub;
  a.work_floats = plan.work_floats;
  a.recv_stride = plan.recv_stride;
  a.log_gpb = plan.log_gpb;
  a.cols = plan.cols;
  a.cols_magic = plan.cols_magic;
  auto rows_aligned = [](const void* base, int64_t stride_bytes) {
    return base == nullptr || (reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride_bytes % 16 == 0);
  };
  a.vector_load = rows_aligned(a.x, a.x_stride * elem) && rows_aligned(p.up, p.up_stride * 4) &&
                  rows_aligned(p.norm.delta, p.norm.delta_stride * 4) &&
                  rows_aligned(p.norm.weight, 0);
  a.up = p.up;
  a.up_stride = p.up_stride;
  a.activation = p.activation;
  a.rms = p.norm;
  a.splits = p.splits;
  a.merged_at = plan.merged_at;
  a.offset_terms = p.offset_terms;
  a.offset_terms_stride = p.offset_terms_stride;
  auto* kernel = TiledKernelFor<Tin, Tout, P, 0>(p);
  // The decode rotations of Llama-3 8B and 70B get their shape at compile time: 4096 wide on a
  // cluster of 8 the whole shape, 8192 on 8 and 14336 and 28672 as 28 segments their passes.
  // (8192 with its whole shape constant was 1% slower per 70B step on the H200: 13.70-13.83
  // against 13.59-13.61 ms; 4096 2.8% faster per 8B step.)
  if constexpr (std::is_same_v<Tout, __half> && P == 1) {
    if (plan.cluster == 8 && plan.log_sub == 9) kernel = TiledKernelFor<Tin, Tout, P, 9, 3>(p);
    if (plan.log_sub == 10) kernel = TiledKernelFor<Tin, Tout, P, 10>(p);
  }
  if constexpr (std::is_same_v<Tout, __half> && P == 28) {
    if (plan.log_sub == 9) kernel = TiledKernelFor<Tin, Tout, P, 9>(p);
    if (plan.log_sub == 10) kernel = TiledKernelFor<Tin, Tout, P, 10>(p);
  }
  if (plan.shared_bytes > 48 * 1024) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan.shared_bytes)));
  }
  const unsigned grid = static_cast<unsigned>(p.batch * plan.cluster);
  return detail::LaunchKernel({dim3(grid), dim3(static_cast<unsigned>(plan.threads)),
                               static_cast<size_t>(plan.shared_bytes), static_cast<unsigned>(plan.cluster)},
                              stream, kernel, a);
}

template <typename Tin, typename Tout>
absl::Status LaunchTiledOrder(const HadamardRotateParams& p, const TiledPlan& plan,
                              cudaStream_t stream) {
  switch (p.rotation.base_order) {
    case 1:
      return LaunchTiled<Tin, Tout, 1>(p, plan, stream);
    case 12:
      return LaunchTiled<Tin, Tout, 12>(p, plan, stream);
    case 20:
      return LaunchTiled<Tin, Tout, 20>(p, plan, stream);
    case 28:
      return LaunchTiled<Tin, Tout, 28>(p, plan, stream);
    case 36:
      return LaunchTiled<Tin, Tout, 36>(p, plan, stream);
    case 60:
      return LaunchTiled<Tin, Tout, 60>(p, plan, stream);
    default:
      return absl::InternalError(
          absl::StrCat("LaunchHadamardRotate: no tiled kernel for p=", p.rotation.base_order));
  }
}

template <typename Tin, typename Tout>
absl::Status Launch(const HadamardRotateParams& p, RotateSchedule schedule, const TiledPlan& plan,
                    cudaStream_t stream) {
  if (schedule == RotateSchedule::kRegisterTiled)
    return LaunchTiledOrder<Tin, Tout>(p, plan, stream);
  return LaunchRowPerBlock<Tin, Tout>(p, stream);
}

}  // namespace

RotationDesc DescribeRotation(const HadamardRotation& rotation, const int8_t* device_base) {
  RotationDesc d;
  d.n = rotation.size();
  d.seed = rotation.seed();
  d.base_order = rotation.base_order();
  d.pow2_order = rotation.pow2_order();
  d.base_is_hadamard = rotation.base_is_hadamard();
  // The CPU keeps 1/√(p·L) in double and casts to fp32 at use: the same value.
  const double scale_of =
      static_cast<double>(d.base_is_hadamard ? d.base_order * d.pow2_order : d.pow2_order);
  d.norm = static_cast<float>(1.0 / std::sqrt(scale_of));
  d.base = device_base;
  return d;
}

absl::StatusOr<RotateLaunchInfo> PlanHadamardRotate(int sm, const HadamardRotateParams& params) {
  TiledPlan tiled;
  absl::StatusOr<RotateSchedule> schedule = ChooseSchedule(sm, params, &tiled);
  if (!schedule.ok()) return schedule.status();
  RotateLaunchInfo info;
  info.schedule = *schedule;
  if (*schedule == RotateSchedule::kRegisterTiled) {
    info.cluster_blocks = tiled.cluster;
    info.threads = tiled.threads;
    info.shared_bytes = tiled.shared_bytes;
  } else {
    info.cluster_blocks = 1;
    info.threads = params.rotation.n >= 4096 ? 1024 : 256;
    info.shared_bytes = SharedBytes(params.rotation);
  }
  return info;
}

bool IsSupported(int sm, const HadamardRotateParams& params) {
  if (sm < 80) return false;
  absl::StatusOr<RotateLaunchInfo> info = PlanHadamardRotate(sm, params);
  return info.ok() && info->shared_bytes <= MaxSharedBytes(sm);
}

absl::Status LaunchHadamardRotate(const HadamardRotateParams& params, cudaStream_t stream) {
  if (absl::Status s = Validate(params); !s.ok()) return s;
  int sm = 0;
  if (absl::Status s = detail::CurrentDeviceSm(&sm); !s.ok()) return s;
  TiledPlan plan;
  absl::StatusOr<RotateSchedule> schedule = ChooseSchedule(sm, params, &plan);
  if (!schedule.ok()) return schedule.status();
  const bool in16 = params.x_type == ActivationType::kF16;
  const bool out16 = params.out_type == ActivationType::kF16;
  if (in16 && out16) return Launch<__half, __half>(params, *schedule, plan, stream);
  if (in16) return Launch<__half, float>(params, *schedule, plan, stream);
  if (out16) return Launch<float, __half>(params, *schedule, plan, stream);
  return Launch<float, float>(params, *schedule, plan, stream);
}

}  // namespace bitloom::kernels::cuda
