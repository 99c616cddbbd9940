// Prefill attention on the tensor cores (flash-attention 2 on mma.sync.m16n8k16): the default
// kernel of LaunchPagedPrefillAttention; paged_attention.cu keeps the fp32 FMA kernel for
// params.exact_fp32. Included by paged_attention.cu only.
//
// Grid: one block per (64-row tile, kv head), 1-D, heaviest tile first: block b serves kv head
// b % num_kv_heads and row tile row_tiles − 1 − b / num_kv_heads, so under a causal mask the
// tiles with the most keys start first and the short ones fill the tail. 128 threads = 4 warps.
//   - Rows: as the fp32 kernel, a tile's 64 rows are consecutive (token, head-of-the-group) pairs
//     of one kv head (row r: token r / group, head kv_head·group + r % group), so GQA heads share
//     every K/V tile and a tile of consecutive tokens spans only 64/group positions (less of the
//     causal diagonal is masked). Warp w owns rows 16w..16w+15, i.e. one mma M tile.
//   - Shared memory (dynamic, fp16, rows padded by 16 bytes to a stride of D + 8 halves so the 8
//     row addresses of an ldmatrix hit 8 different 16-byte bank groups): Q [64][D + 8]; K and V
//     [2 stages][kKeys][D + 8] each; each row's sequence and position sit in its Q row's padding.
//     D = 64: 45 KB, 128: 85 KB, 256: 99 KB, within sm_86/89's opt-in limit too (kKeys = 32 at
//     D = 256 keeps S and O in registers).
//   - Q: converted to fp16 (from fp16 or fp32) into shared memory once; at D <= 128 each warp then
//     keeps its A fragments in registers for the whole key loop (D/16 × 4 words), at D = 256 it
//     reloads them from shared memory with ldmatrix per k-step (registers go to O).
//   - Key tiles of kKeys keys from the pass's first visible key: every thread issues 16-byte
//     cp.async copies of K and V rows (through the block table, one page lookup per row chunk)
//     into the stage the block is not reading; keys past the pass's last position are zero-filled
//     (src-size 0) so P = 0 meets a finite V. Two stages: tile i + 1 is in flight while tile i is
//     computed; one __syncthreads before and one after the compute of each tile.
//   - S = Q·K^T: per k-step of 16 dims, ldmatrix.x4 gives the B fragments of two 8-key n-tiles
//     (K rows are the B columns, so no transpose). Scores go to the log2 domain in fp32
//     registers: ·scale·log2e, or cap·tanh(s/cap)·log2e with the soft-cap; then the mask
//     (sequence of the pass, p <= P, P − p < window) when the tile is not wholly visible to all
//     16 rows of the warp (a warp-uniform test, so interior tiles skip it).
//   - Online softmax per row: a row's kKeys scores live in the 4 lanes of a quad (S accumulator
//     layout), max by two xor-shuffles, exp2, O and the lane's partial row sum rescaled. The
//     exponentials of the S accumulator of n-tiles 2k, 2k+1 are exactly the A fragment of k-step
//     k of P·V (rows g, g+8; keys 2t.., 2t+8..), so P is packed to fp16 in registers, never
//     stored.
//   - O += P·V: ldmatrix.x4.trans reads V rows (keys) as the B operand transposed, two 8-dim
//     n-tiles per instruction. O is fp32 [D/8][4] per lane; at the end it is divided by the quad's
//     summed row sum (0 → zeros) and stored as fp16 or fp32 pairs.
//   - Several sequences in one tile (tokens of different sequences adjacent in the flattened
//     batch): the block makes one pass per distinct sequence of its rows, as the fp32 kernel;
//     rows of other sequences are masked in that pass. The engine's prefill chunks are one
//     sequence, so one pass. Warps whose rows cannot see a tile (causal or window) skip its math
//     but still take part in loading it.
// Precision: Q and P are rounded to fp16 (2^-11 relative) before the products; the K/V are fp16
// already; products are accumulated in fp32 by the tensor cores, the softmax statistics in fp32.
// The tests bound the difference to AttentionF32 by 2e-3 of max(1, max|out|).
#pragma once

#include <cuda_fp16.h>

#include <climits>
#include <cstdint>

#include "device_util.cuh"
#include "paged_attention.cuh"

namespace bitloom::kernels::cuda::detail {

// Arguments of both prefill kernels (fp32 FMA and tensor core).
struct PrefillArgs {
  const uint16_t* k;  // [num_pages][page_size][num_kv_heads][D] fp16
  const uint16_t* v;
  const int32_t* block_tables;  // [num_seqs, max_pages_per_seq]
  int max_pages_per_seq;
  int page_shift;  // log2(page_size)
  int num_kv_heads;
  const void* q;  // [num_tokens, num_heads, D]
  bool q_f16;
  void* out;  // [num_tokens, num_heads, D]
  bool out_f16;
  const int32_t* token_seq;  // [num_tokens]
  const int32_t* token_pos;  // [num_tokens]
  int num_tokens;
  int num_heads;
  int group;  // num_heads / num_kv_heads
  float scale;
  float softcap;
  int window;
  int row_tiles;  // tensor-core kernel: ceil(num_tokens·group / kMmaRows)
};

constexpr int kMmaRows = 64;  // query rows per block: 4 warps × one m16 tile
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;

template <int D>
struct MmaPrefillShape {
  static constexpr int kKeys = D <= 128 ? 64 : 32;  // keys per tile
  static constexpr int kStride = D + 8;             // halves per shared row (16-byte pad)
  static constexpr bool kQInRegisters = D <= 128;
  // Q + 2 stages of K and V; the rows' sequence and position live in Q's row padding.
  static constexpr size_t kSharedBytes =
      sizeof(__half) * (size_t{kMmaRows} * kStride + size_t{4} * kKeys * kStride);
};

// 16 bytes global → shared, asynchronously; fill = false writes 16 zero bytes instead.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool fill) {
  const int bytes = fill ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Four 8×8 fp16 matrices; lane l gives the row address of matrix l / 8, row l % 8.
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  return Half2AsU32(__floats2half2_rn(lo, hi));
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads) PagedPrefillMmaKernel(const PrefillArgs a) {
  using Shape = MmaPrefillShape<D>;
  constexpr int kKeys = Shape::kKeys;
  constexpr int kStride = Shape::kStride;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kTileHalves = kKeys * kStride;
  constexpr float kLog2e = 1.4426950408889634f;
  static_assert(kKeys * kChunks % kMmaThreads == 0, "whole tile chunks per thread");
  extern __shared__ __align__(16) unsigned char smem[];
  __half* q_s = reinterpret_cast<__half*>(smem);  // [kMmaRows][kStride]
  __half* kv_s = q_s + kMmaRows * kStride;        // [stage][K, V][kKeys][kStride]
  // Row r's sequence and position: the first 8 bytes of its Q row's 16-byte padding, which no
  // ldmatrix reads (it keeps D = 256 within the 99 KB opt-in limit of sm_86/sm_89).
  auto row_meta = [q_s](int r) { return reinterpret_cast<int*>(q_s + r * kStride + D); };

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;  // mma group: rows g and g + 8 of the warp's tile
  const int tq = lane & 3;  // thread in group: columns 2·tq, 2·tq + 1 of each n-tile
  const int kv_head = static_cast<int>(blockIdx.x % a.num_kv_heads);
  const int tile = a.row_tiles - 1 - static_cast<int>(blockIdx.x / a.num_kv_heads);
  const int64_t row_base = int64_t{tile} * kMmaRows;
  const int64_t total_rows = int64_t{a.num_tokens} * a.group;

  if (tid < kMmaRows) {
    const int64_t r = row_base + tid;
    const bool valid = r < total_rows;
    const int64_t token = valid ? r / a.group : 0;
    row_meta(tid)[0] = valid ? a.token_seq[token] : -1;
    row_meta(tid)[1] = valid ? a.token_pos[token] : -1;
  }
  for (int i = tid; i < kMmaRows * kChunks; i += kMmaThreads) {
    const int r = i / kChunks;
    const int c = (i % kChunks) * 8;
    const int64_t gr = row_base + r;
    uint4 h = make_uint4(0, 0, 0, 0);
    if (gr < total_rows) {
      const int64_t token = gr / a.group;
      const int64_t head = int64_t{kv_head} * a.group + gr % a.group;
      const int64_t off = (token * a.num_heads + head) * D + c;
      if (a.q_f16) {
        h = __ldg(reinterpret_cast<const uint4*>(static_cast<const __half*>(a.q) + off));
      } else {
        float f[8];
        LoadFloat8(a.q, false, off, f);
        h = make_uint4(PackHalf2(f[0], f[1]), PackHalf2(f[2], f[3]), PackHalf2(f[4], f[5]),
                       PackHalf2(f[6], f[7]));
      }
    }
    *reinterpret_cast<uint4*>(q_s + r * kStride + c) = h;
  }
  __syncthreads();

  // Lane addresses of the ldmatrix operands (bytes, shared space).
  // A (Q, row-major 16×16): matrices (rows 0-7 | 8-15) × (cols 0-7 | 8-15) → a0, a1, a2, a3.
  const uint32_t q_lane = SharedAddress(
      q_s + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8);
  // B from K (keys are B's columns): matrices (keys 0-7, dims 0-7), (keys 0-7, dims 8-15),
  // (keys 8-15, dims 0-7), (keys 8-15, dims 8-15) → b0, b1 of n-tile 2j and of n-tile 2j + 1.
  const uint32_t k_lane_off =
      static_cast<uint32_t>(((lane & 7) + (lane >> 4) * 8) * kStride + ((lane >> 3) & 1) * 8) * 2;
  // B from V, transposed (keys are B's rows): matrices (keys 0-7, dims 0-7), (keys 8-15, dims
  // 0-7), (keys 0-7, dims 8-15), (keys 8-15, dims 8-15) → b0, b1 of dim n-tile 2j and 2j + 1.
  const uint32_t v_lane_off =
      static_cast<uint32_t>(((lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8) * 2;
  const uint32_t kv_base = SharedAddress(kv_s);

  uint32_t qf[Shape::kQInRegisters ? D / 16 : 1][4];
  if constexpr (Shape::kQInRegisters) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) LdMatrixX4(qf[kk], q_lane + kk * 32);
  }

  const int my_row0 = warp * 16 + g;  // this lane's rows: my_row0 and my_row0 + 8
  const int seq0 = row_meta(my_row0)[0], pos0 = row_meta(my_row0)[1];
  const int seq1 = row_meta(my_row0 + 8)[0], pos1 = row_meta(my_row0 + 8)[1];

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max, log2 domain
  float l0 = 0.0f, l1 = 0.0f;            // this lane's part of the row sums

  const float score_mul = a.softcap > 0.0f ? a.scale / a.softcap : a.scale * kLog2e;
  const float cap_mul = a.softcap * kLog2e;

  // Every thread derives the same passes from shared memory: the control flow is block-uniform.
  uint64_t pending = 0;
  for (int r = 0; r < kMmaRows; ++r) pending |= uint64_t{row_meta(r)[0] >= 0 ? 1u : 0u} << r;
  while (pending != 0) {
    const int seq = row_meta(__ffsll(static_cast<long long>(pending)) - 1)[0];
    int key_lo = INT_MAX, key_hi = 0;    // the pass's key range, over all its rows
    int warp_lo = INT_MAX, warp_hi = 0;  // over this warp's rows of the pass
    int warp_min_pos = INT_MAX, warp_max_pos = -1;
    bool warp_all = true;  // all 16 rows of this warp are in the pass
    for (int r = 0; r < kMmaRows; ++r) {
      const bool mine = r / 16 == warp;
      if (row_meta(r)[0] != seq) {
        warp_all = warp_all && !mine;
        continue;
      }
      pending &= ~(uint64_t{1} << r);
      const int pos = row_meta(r)[1];
      const int first = a.window > 0 ? max(0, pos - a.window + 1) : 0;
      key_lo = min(key_lo, first);
      key_hi = max(key_hi, pos + 1);
      if (mine) {
        warp_lo = min(warp_lo, first);
        warp_hi = max(warp_hi, pos + 1);
        warp_min_pos = min(warp_min_pos, pos);
        warp_max_pos = max(warp_max_pos, pos);
      }
    }
    const bool act0 = seq0 == seq, act1 = seq1 == seq;
    const int32_t* table = a.block_tables + int64_t{seq} * a.max_pages_per_seq;
    const int num_key_tiles = (key_hi - key_lo + kKeys - 1) / kKeys;

    auto load_tile = [&](int k0, int stage) {
      const uint32_t k_dst = kv_base + static_cast<uint32_t>(stage * 2 * kTileHalves) * 2;
      const uint32_t v_dst = k_dst + kTileHalves * 2;
#pragma unroll
      for (int step = 0; step < kKeys * kChunks / kMmaThreads; ++step) {
        const int i = tid + step * kMmaThreads;
        const int j = i / kChunks;
        const int c = (i % kChunks) * 8;
        const int t = k0 + j;
        const bool in = t < key_hi;
        const int64_t off =
            in ? KvOffset<D>(table, t, a.page_shift, a.num_kv_heads, kv_head) + c : 0;
        const uint32_t at = static_cast<uint32_t>(j * kStride + c) * 2;
        CpAsync16(k_dst + at, a.k + off, in);
        CpAsync16(v_dst + at, a.v + off, in);
      }
      CpAsyncCommit();
    };

    if (num_key_tiles > 0) load_tile(key_lo, 0);
    for (int it = 0; it < num_key_tiles; ++it) {
      if (it + 1 < num_key_tiles) {
        load_tile(key_lo + (it + 1) * kKeys, (it + 1) & 1);
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();  // tile `it` is in shared memory for every thread
      const int k0 = key_lo + it * kKeys;
      // Warp-uniform: skip tiles none of this warp's rows can see.
      if (warp_hi > k0 && warp_lo < k0 + kKeys) {
        const uint32_t k_tile = kv_base + static_cast<uint32_t>((it & 1) * 2 * kTileHalves) * 2;
        const uint32_t v_tile = k_tile + kTileHalves * 2;

        float s[kKeys / 8][4];
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t qa[4];
          if constexpr (Shape::kQInRegisters) {
            qa[0] = qf[kk][0], qa[1] = qf[kk][1], qa[2] = qf[kk][2], qa[3] = qf[kk][3];
          } else {
            LdMatrixX4(qa, q_lane + kk * 32);
          }
#pragma unroll
          for (int nb = 0; nb < kKeys / 16; ++nb) {
            uint32_t b[4];
            LdMatrixX4(b, k_tile + k_lane_off + (nb * 16 * kStride + kk * 16) * 2);
            MmaM16N8K16(s[2 * nb], qa[0], qa[1], qa[2], qa[3], b[0], b[1]);
            MmaM16N8K16(s[2 * nb + 1], qa[0], qa[1], qa[2], qa[3], b[2], b[3]);
          }
        }

        // Scores to the log2 domain (uniform branches: tanh only with the soft-cap), then the
        // mask where the tile is not wholly visible to the warp's 16 rows.
        if (a.softcap > 0.0f) {
#pragma unroll
          for (int j = 0; j < kKeys / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = cap_mul * tanhf(s[j][e] * score_mul);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kKeys / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] *= score_mul;
          }
        }
        const bool full = warp_all && k0 + kKeys - 1 <= warp_min_pos &&
                          (a.window == 0 || warp_max_pos - k0 < a.window);
        if (!full) {
#pragma unroll
          for (int j = 0; j < kKeys / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int t = k0 + 8 * j + 2 * tq + (e & 1);
              const int pos = e < 2 ? pos0 : pos1;
              const bool act = e < 2 ? act0 : act1;
              const bool visible = act && t <= pos && (a.window == 0 || pos - t < a.window);
              s[j][e] = visible ? s[j][e] : -INFINITY;
            }
          }
        }

        // Online softmax: the quad (4 lanes) holds a row's kKeys scores.
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
          mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
          mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        // A row that has seen nothing keeps max −inf; exp2(−inf − 0) = 0 keeps it empty.
        const float base0 = mx0 == -INFINITY ? 0.0f : mx0;
        const float base1 = mx1 == -INFINITY ? 0.0f : mx1;
        const float corr0 = exp2f(m0 - base0), corr1 = exp2f(m1 - base1);
        m0 = mx0;
        m1 = mx1;
        l0 *= corr0;
        l1 *= corr1;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          o[j][0] *= corr0;
          o[j][1] *= corr0;
          o[j][2] *= corr1;
          o[j][3] *= corr1;
        }
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
          s[j][0] = exp2f(s[j][0] - base0);
          s[j][1] = exp2f(s[j][1] - base0);
          s[j][2] = exp2f(s[j][2] - base1);
          s[j][3] = exp2f(s[j][3] - base1);
          l0 += s[j][0] + s[j][1];
          l1 += s[j][2] + s[j][3];
        }

        // O += P·V, P's A fragments straight from the S accumulators.
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
          const uint32_t p0 = PackHalf2(s[2 * kk][0], s[2 * kk][1]);
          const uint32_t p1 = PackHalf2(s[2 * kk][2], s[2 * kk][3]);
          const uint32_t p2 = PackHalf2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
          const uint32_t p3 = PackHalf2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
          for (int nd = 0; nd < D / 16; ++nd) {
            uint32_t b[4];
            LdMatrixX4Trans(b, v_tile + v_lane_off + (kk * 16 * kStride + nd * 16) * 2);
            MmaM16N8K16(o[2 * nd], p0, p1, p2, p3, b[0], b[1]);
            MmaM16N8K16(o[2 * nd + 1], p0, p1, p2, p3, b[2], b[3]);
          }
        }
      }
      __syncthreads();  // the stage read here is the one the next iteration overwrites
    }
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t gr = row_base + my_row0 + half * 8;
    if (gr >= total_rows) continue;
    const float sum = half == 0 ? l0 : l1;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int64_t token = gr / a.group;
    const int64_t head = int64_t{kv_head} * a.group + gr % a.group;
    const int64_t out_row = (token * a.num_heads + head) * D;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      StoreFloat2(a.out, a.out_f16, out_row + 8 * j + 2 * tq, o[j][2 * half] * inv,
                  o[j][2 * half + 1] * inv);
    }
  }
}

}  // namespace bitloom::kernels::cuda::detail
