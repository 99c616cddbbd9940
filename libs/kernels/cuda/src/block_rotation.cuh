// RotateRowInBlock: one thread block rotates one activation row into its own shared memory, for a
// kernel that consumes the rotated row itself (the self-rotating GEMV, scalar_codec_gemv.cu) instead
// of reading it from a rotation kernel's output in global memory.
//
// The rotation is CODEC_HADAMARD_SCALAR's R with a power-of-two width n = 2^log_n (base order
// p = 1: Llama's 4096 and 8192), the randomized Walsh–Hadamard transform of hadamard_rotation.h.
// The input is either a plain fp32 row or a decoder layer's residual stream: r = residual + delta
// (written to residual_out by block 0 of the grid, so that every other block can still read the old
// residual), normalised as LaunchResidualRmsNorm normalises it, with 1/rms applied after the
// transform as the fused rotation kernel does. The fp32 arithmetic is the register-tiled
// rotation's (hadamard_rotation.cu at one block per row), so the result equals that kernel's to
// the bit, except that Σr² may be summed in another order (the thread count differs): 1/rms then
// differs by at most an fp32 ulp.
//
// Layout (n/16 tasks over the block's threads, any multiple of 32 of them):
//   pass 0     task t owns elements [16t, 16t+16): loads them (16-byte vectors), forms the input,
//              applies the SplitMix64 signs and butterfly stages h = 1..8 in registers, and stores
//              the tile to `work` (fp32 [n], SwizzleWork order, float4 stores);
//   pass k     tiles of 16 elements 2^b apart, b = 4k (the last pass shifted down to end at bit
//              log_n, skipping the stages already done): 4 stages in registers, back to `work`;
//   last pass  scaled by norm (· 1/rms) and stored as fp16 to `out` [n] in natural order: what
//              the GEMV reads from global memory otherwise.
// One barrier of the rotating threads after every pass; the residual's Σr² goes through shared memory per warp after
// pass 0 and is summed before the last pass (n >= 512 gives at least 3 passes).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "block_reduce.cuh"
#include "hadamard_rotation_tiled.cuh"

namespace bitloom::kernels::cuda::detail {

inline constexpr int kBlockRotateMinLog = 9;   // n >= 512: at least 3 passes
inline constexpr int kBlockRotateMaxLog = 13;  // n <= 8192: 48 KiB of shared memory

// What one block rotates. Every pointer is 16-byte aligned and holds n elements.
struct BlockRotateInput {
  const float* x = nullptr;         // plain input, or null for the residual input
  const float* residual = nullptr;  // residual input: r = residual (+ delta)
  const float* delta = nullptr;     // or null
  const float* weight = nullptr;    // the norm's weight: r·inv_rms ⊙ (weight + weight_offset)
  float weight_offset = 0.0f;
  float eps = 0.0f;
  float* residual_out = nullptr;    // receives r (block 0 of the grid writes it)
  uint64_t seed = 0;                // SplitMix64 seed of the signs
  float norm = 1.0f;                // 1/√n
  int log_n = 0;                    // kBlockRotateMinLog..kBlockRotateMaxLog
};

__device__ __forceinline__ void LoadFloat4(const float* p, float (&out)[4]) {
  const float4 f = *reinterpret_cast<const float4*>(p);
  out[0] = f.x, out[1] = f.y, out[2] = f.z, out[3] = f.w;
}

// Shared memory RotateRowInBlock needs beyond its own statics: work fp32 [n] + out fp16 [n].
__host__ __device__ constexpr int64_t BlockRotateSharedBytes(int64_t n) { return n * 6; }

// Called by threads 0..threads−1 of the block (a multiple of 32), which sync() brings together
// (__syncthreads, or a named barrier of exactly those threads); `work` and `out` are the caller's
// shared memory.
template <typename Sync>
__device__ __forceinline__ void RotateRowInThreads(const BlockRotateInput& in, float* work,
                                                   __half* out, int threads, Sync&& sync) {
  __shared__ double warp_sum_sq[32];
  const int tasks = 1 << (in.log_n - 4);
  const int npass = (in.log_n + 3) / 4;
  const bool rms = in.residual != nullptr;
  const bool writer = blockIdx.x == 0;
  double sum_sq = 0.0;
  float scale = in.norm;
  for (int pass = 0; pass < npass; ++pass) {
    const bool last = pass + 1 == npass;
    const int b = min(4 * pass, in.log_n - 4);
    const int first = 4 * pass - b;
    if (rms && last) {
      double total = 0.0;
      for (int w = 0; w < (threads >> 5); ++w) total += warp_sum_sq[w];
      scale = in.norm * InvRms(total, int64_t{1} << in.log_n, in.eps);
    }
    for (int t = threadIdx.x; t < tasks; t += threads) {
      const int u0 = ((t >> b) << (b + 4)) | (t & ((1 << b) - 1));
      float v[kTile];
      if (pass == 0) {
        if (rms) {
          // Four elements at a time: the GEMV around this holds its first codes in registers.
          Unroll<kTile / 4>([&]<int i>() {
            float r[4], w[4];
            LoadFloat4(in.residual + u0 + 4 * i, r);
            if (in.delta != nullptr) {
              float d[4];
              LoadFloat4(in.delta + u0 + 4 * i, d);
              Unroll<4>([&]<int q>() { r[q] = __fadd_rn(r[q], d[q]); });
            }
            if (writer) {
              *reinterpret_cast<float4*>(in.residual_out + u0 + 4 * i) =
                  make_float4(r[0], r[1], r[2], r[3]);
            }
            LoadFloat4(in.weight + u0 + 4 * i, w);
            Unroll<4>([&]<int q>() {
              sum_sq += static_cast<double>(r[q]) * static_cast<double>(r[q]);
              v[4 * i + q] = __fmul_rn(r[q], __fadd_rn(w[q], in.weight_offset));
            });
          });
        } else {
          LoadTile(in.x + u0, true, v);
        }
        ApplyTileSigns(v, TileSignBits(in.seed, u0));
      } else {
        Unroll<kTile>([&]<int q>() { v[q] = work[SwizzleWork(u0 + (q << b))]; });
      }
      TileButterflies(v, first);
      if (last) {
        Unroll<kTile>([&]<int q>() { out[u0 + (q << b)] = __float2half_rn(v[q] * scale); });
      } else if (pass == 0) {
        Unroll<kTile / 4>([&]<int i>() {
          *reinterpret_cast<float4*>(work + SwizzleWork(u0 + 4 * i)) =
              make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
        });
      } else {
        Unroll<kTile>([&]<int q>() { work[SwizzleWork(u0 + (q << b))] = v[q]; });
      }
    }
    if (pass == 0 && rms) {
      sum_sq = WarpSum(sum_sq);
      if ((threadIdx.x & 31) == 0) warp_sum_sq[threadIdx.x >> 5] = sum_sq;
    }
    sync();
  }
}

// RotateRowInThreads by every thread of the block.
__device__ __forceinline__ void RotateRowInBlock(const BlockRotateInput& in, float* work,
                                                 __half* out) {
  RotateRowInThreads(in, work, out, static_cast<int>(blockDim.x), [] { __syncthreads(); });
}

}  // namespace bitloom::kernels::cuda::detail
