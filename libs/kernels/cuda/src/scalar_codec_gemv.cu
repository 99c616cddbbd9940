// The decode GEMV of CODEC_HADAMARD_SCALAR on tensor cores (see scalar_codec_gemv.h).
//
// Why tensor cores for a GEMV: the kernel must decode K-bit codes as fast as HBM delivers them.
// At K = 2 an H100 streams ~1.2e13 weights/s, leaving ~2.5 issue slots per weight for everything.
// Decoding to fp32 and doing batch·1 FFMA per weight on the CUDA cores runs out of slots at batch
// 1 for K ≤ 3 and at every K for batch 8. mma.m16n8k16 does 16·16·8 multiply-adds per warp
// instruction, so the batch (n = 8 columns) costs nothing and only the decode remains: about two
// instructions per weight (scalar_codec_gemv.cuh), whatever the batch.
//
// Tiling. One thread block owns a tile of 16 rows (the mma's m) of one matrix and W warps (1..8)
// that split the row's columns (split-K); the warps' partial sums meet in shared memory at the
// end. Within a warp, lane = 4·g + t:
//   - rows: g and g+8 of the tile (the A fragment's rows);
//   - columns: per iteration the warp takes a *super-chunk* of 512 columns = 4 chunks of 128, and
//     lane t owns chunk t of it for both its rows: K consecutive uint4 per row (a chunk is 4 code
//     blocks of K words = exactly K 16-byte loads, 16-byte aligned because rows are), so every
//     load is 128-bit and the 4 lanes of a row read 64·K contiguous bytes;
//   - batch: lane g supplies activation row g (the B fragment's column); lanes g ≥ batch supply 0
//     and load nothing.
// Each code block of a lane feeds 8 mma (16 pairs of codes, 2 pairs per row per mma); the mma's 16
// k-slots come from the 4 lanes' 4 different chunks, which is why the per-group scale is applied to
// A in fp16 rather than to the fp32 accumulator. Super-chunks go round-robin to the W warps.
//
// Accumulators. Consecutive mma of a warp write kAccSets different fp32 accumulator sets, summed
// once before the shared-memory reduction: a super-chunk's 32 mma form 4 independent chains of 8
// instead of one chain of 32 (mma latency is ~30 cycles; one chain capped a warp at one mma per
// latency whatever the decode cost). K ≥ 6 (and K ≥ 5 in a mixed-K kernel) keeps 2 sets: its
// 8·K code registers leave no room for 8 more accumulators under the 128-register cap.
//
// Pipeline (registers, no shared memory). A lane's codes and scales for its chunk live in
// registers. As soon as block b of the current super-chunk is decoded, the registers that held
// its words are free, and the loads of the *next* super-chunk's words that fit in them are issued
// (uint4 u goes out after block (4u+3)/K, its scale after block b). So the next super-chunk's
// DRAM reads are in flight during the current one's math at no register cost; a warp with one
// super-chunk only waits for its first load. Activations (L1/L2-resident) are double-buffered per
// block: block b+1's (or the next super-chunk's block 0) are loaded while b is computed.
//
// Groups. A launch covers up to 4 matrices that share x (same cols and batch): blocks
// [first_tile_i, first_tile_{i+1}) are matrix i's row tiles; the block picks its entry from the
// table in the kernel arguments and a block-uniform branch on K runs the per-K body. The kernel is
// instantiated for a K range: [K, K] (one matrix, or a group of equal K: exactly the single code),
// [1, 4] and [1, 8] for mixed groups. The bodies of a mixed kernel share one register allocation
// (the max over them), which is why mixed groups with K ≤ 4 get their own instantiation.
//
// Constants. 16 rows: the mma's m. 128 columns per lane: one uint4 per bit of K (the layout's
// 16-byte rows make this the widest aligned load). W (PlanScalarCodecGemv): the most warps per
// block (≤ 8, ≤ super-chunks per row) that still let every block of the launch be resident at
// once, else 1. One wave of warps that each stream several super-chunks through the pipeline
// beats waves of warps that each wait once for DRAM and leave a tail. 256 threads at most;
// __launch_bounds__ asks for 2 such blocks per SM, i.e. at most 128 registers, so 16 warps fit on
// an SM (at 129 registers an 8-warp block would run alone on its SM).
//
// Memory: codes and scales are read once (the DRAM stream); activations are re-read by every
// 16-row tile but are small (batch·cols·2 bytes) and stay in L1/L2. Nothing else is written but y.

#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "block_rotation.cuh"
#include "bulk_copy.cuh"
#include "dependent_launch.cuh"
#include "device_properties.h"
#include "launch.h"
#include "scalar_codec_gemv.cuh"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kTileRows = 16;         // mma m
constexpr int kBlocksPerChunk = 4;    // code blocks a lane owns per iteration (128 columns)
constexpr int kSuperChunkCols = 512;  // 4 lanes × 128
constexpr int kMaxWarps = 8;
// Warps per block when the tiles do not fit one wave at 2+ warps per block (8B gate/up, 70B
// gate/up and down): measured on the H100 against W = 1 (one wave of one-warp blocks that stream the
// row): 8B gate/up K = 3/4 31.5 → 28.9 µs, 70B gate/up K = 2 46.4 → 40.9 µs, K = 4 55.0 → 53.9 µs.
constexpr int kTallWarps = 4;
constexpr int kTallWarpsMaxBatch = 4;
// Resident warps per SM at the kernel's 128-register cap: 65536 registers / (128 · 32 lanes).
constexpr int kResidentWarpsPerSm = 16;
// Independent mma accumulator chains per warp: 4, or 2 where K's code registers leave no room
// (kMixed: a kernel that holds several K bodies, whose register allocation is tighter).
template <int K, bool kMixed>
constexpr int kAccSets = K >= 6 || (kMixed && K >= 5) ? 2 : 4;

__device__ __forceinline__ int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

// One weight of a (grouped) launch. Units: uint4 = 16 bytes of codes.
struct GemvMatrix {
  const uint4* codes;      // [rows, row_stride_vec] packed code blocks
  const uint16_t* scales;  // fp16 [rows, groups_per_row]
  float* y;                // fp32 [batch, y_stride]
  int64_t rows;
  int64_t row_stride_vec;  // uint4 per packed row
  int64_t groups_per_row;
  int64_t y_stride;        // elements
  uint32_t group_magic;    // ceil(2^31 / blocks_per_group): block → group index without a divide
  int bits;                // K, 1..8
  int first_tile;          // blockIdx.x of this matrix's first 16-row tile
  bool chunk_one_group;    // group_size is a multiple of 128: a lane's chunk has one scale per row
};

// The activations every matrix of a launch reads.
struct GemvActivations {
  const uint4* x;          // fp16 [batch, x_stride_vec·8], rotated, zero-padded
  int64_t x_stride_vec;    // uint4 per activation row
  int batch;               // 1..8
  int blocks_per_row;      // code blocks per row (shared: same cols)
};

struct GemvGroupArgs {
  GemvMatrix m[kGemvMaxGroup];
  GemvActivations act;
  int count;               // entries used
};

// floor(block / blocks_per_group) for block < 2^20 and blocks_per_group ≤ 2^11 (group ≤ 65536):
// with m = ceil(2^31/d) = (2^31 + e)/d, e < d, the product's excess block·e/(d·2^31) < 1/d.
__device__ __forceinline__ uint32_t GroupOfBlock(uint32_t block, uint32_t magic) {
  return static_cast<uint32_t>((static_cast<uint64_t>(block) * magic) >> 31);
}

// A lane's registers for one chunk: both rows' 4·K code words and the 4 blocks' raw fp16 scales.
template <int K>
struct ChunkRegs {
  uint32_t w0[kBlocksPerChunk * K];  // row g
  uint32_t w1[kBlocksPerChunk * K];  // row g+8
  unsigned short s0[kBlocksPerChunk];
  unsigned short s1[kBlocksPerChunk];
};

// Where a lane reads: its two rows and the (shared) activation row.
struct LaneRows {
  const uint4* codes0;
  const uint4* codes1;
  const uint16_t* scales0;
  const uint16_t* scales1;
  uint32_t last_vec;       // the row's last uint4 of codes
  uint32_t last_group;
  uint32_t group_magic;
  bool chunk_one_group;    // the 4 blocks of a chunk share one scale group (group_size % 128 == 0)
};

// uint4 u of a chunk's codes, rows g (v0) and g+8 (v1), into r's words 4u..4u+3.
template <int u, int K>
__device__ __forceinline__ void SetChunkWords(ChunkRegs<K>& r, uint4 v0, uint4 v1) {
  r.w0[4 * u] = v0.x, r.w0[4 * u + 1] = v0.y, r.w0[4 * u + 2] = v0.z, r.w0[4 * u + 3] = v0.w;
  r.w1[4 * u] = v1.x, r.w1[4 * u + 1] = v1.y, r.w1[4 * u + 2] = v1.z, r.w1[4 * u + 3] = v1.w;
}

// Code block kBlock's raw fp16 scales of chunk `chunk`, rows g (scales0) and g+8 (scales1), into
// s0 / s1[kBlock]; the group index is clamped to the row's last. With one group per chunk, blocks
// after 0 copy block 0's (which must already be in s0 / s1[0]).
template <int kBlock>
__device__ __forceinline__ void LoadBlockScales(unsigned short (&s0)[kBlocksPerChunk],
                                                unsigned short (&s1)[kBlocksPerChunk],
                                                const uint16_t* scales0, const uint16_t* scales1,
                                                uint32_t chunk, uint32_t group_magic,
                                                uint32_t last_group, bool chunk_one_group) {
  if (kBlock > 0 && chunk_one_group) {
    s0[kBlock] = s0[0];
    s1[kBlock] = s1[0];
    return;
  }
  const uint32_t gi = min(GroupOfBlock(chunk * kBlocksPerChunk + kBlock, group_magic), last_group);
  s0[kBlock] = __ldg(reinterpret_cast<const unsigned short*>(scales0) + gi);
  s1[kBlock] = __ldg(reinterpret_cast<const unsigned short*>(scales1) + gi);
}

// Loads of chunk `chunk` into `r` that become possible once block kAfter of the previous chunk
// is decoded: uint4 u with (4u+3)/K == kAfter, and block kAfter's scales.
//
// No load is predicated. Indices past the row are clamped to its last uint4 and last group, so
// a chunk (or part of one) past the row decodes to finite values of that row, which meet zero
// activations (LoadActivations) and add nothing. A block inside the row never reads clamped data:
// its words lie below blocks_per_row·K ≤ the row's uint4 count.
template <int K, int kAfter>
__device__ __forceinline__ void LoadChunkPart(ChunkRegs<K>& r, const LaneRows& l, uint32_t chunk) {
  using detail::StaticFor;
  StaticFor<K>([&](auto u_c) {
    constexpr int u = decltype(u_c)::value;
    if constexpr ((4 * u + 3) / K == kAfter) {
      const uint32_t vec = min(chunk * K + u, l.last_vec);
      SetChunkWords<u>(r, __ldg(l.codes0 + vec), __ldg(l.codes1 + vec));
    }
  });
  // With one group per chunk, block 0's scales of this chunk were loaded after block 0 of the
  // previous one.
  LoadBlockScales<kAfter>(r.s0, r.s1, l.scales0, l.scales1, chunk, l.group_magic, l.last_group,
                          l.chunk_one_group);
}

// What a lane without activations (its batch row g ≥ batch, or a block past the row) reads.
__device__ const uint4 kZeroActivations[4] = {};

// uint4 kV (of 4) of code block `block`'s 32 fp16 activations in row `xrow`, or zeros. The load
// is unconditional: a lane with nothing to read reads kZeroActivations. kSharedX: xrow is the
// block's own rotated row in shared memory (a generic load; __ldg is for global memory only).
template <int kV, bool kSharedX>
__device__ __forceinline__ void LoadActivations(uint32_t (&xw)[16], const uint4* xrow,
                                                uint32_t block, bool ok) {
  const uint4* src = ok ? xrow + block * 4 : kZeroActivations;
  const uint4 q = kSharedX ? src[kV] : __ldg(src + kV);
  xw[4 * kV] = q.x, xw[4 * kV + 1] = q.y, xw[4 * kV + 2] = q.z, xw[4 * kV + 3] = q.w;
}

// Code block kBlock of a lane's chunk (its codes in r.w0 / r.w1, rows g and g+8, with raw fp16
// scales s0 / s1) times the activations in xw, into acc (kSets ≥ kAccSets chains). xw leaves with
// code block nb's activations (zeros unless nb_ok), each uint4 replaced as soon as the last mma
// reading it is issued. `exponent` is kHalf2Exponent, neg_center −c in both halves.
template <int K, bool kMixed, bool kSharedX, int kBlock, int kSets>
__device__ __forceinline__ void DecodeBlock(const ChunkRegs<K>& r, unsigned short s0_raw,
                                            unsigned short s1_raw, uint32_t exponent,
                                            __half2 neg_center, uint32_t (&xw)[16],
                                            const uint4* xrow, uint32_t nb, bool nb_ok,
                                            float (&acc)[kSets][4]) {
  using detail::StaticFor;
  static_assert(kSets >= kAccSets<K, kMixed>, "one accumulator per chain");
  const __half2 s0 = __half2half2(__ushort_as_half(s0_raw));
  const __half2 s1 = __half2half2(__ushort_as_half(s1_raw));
  const __half2 ncs0 = __hmul2(s0, neg_center);
  const __half2 ncs1 = __hmul2(s1, neg_center);
  StaticFor<8>([&](auto m_c) {
    constexpr int kM = decltype(m_c)::value;
    constexpr int kBase = kBlock * K;
    const uint32_t a0 = detail::DecodePair<K, 2 * kM, kBase>(r.w0, s0, ncs0, exponent);
    const uint32_t a1 = detail::DecodePair<K, 2 * kM, kBase>(r.w1, s1, ncs1, exponent);
    const uint32_t a2 = detail::DecodePair<K, 2 * kM + 1, kBase>(r.w0, s0, ncs0, exponent);
    const uint32_t a3 = detail::DecodePair<K, 2 * kM + 1, kBase>(r.w1, s1, ncs1, exponent);
    const uint32_t b0 = detail::ActivationPair<K, 2 * kM>(xw);
    const uint32_t b1 = detail::ActivationPair<K, 2 * kM + 1>(xw);
    detail::MmaM16N8K16(acc[kM % kAccSets<K, kMixed>], a0, a1, a2, a3, b0, b1);
    StaticFor<4>([&](auto v_c) {
      constexpr int v = decltype(v_c)::value;
      if constexpr (detail::LastMmaReadingActivations<K>(v) == kM) {
        LoadActivations<v, kSharedX>(xw, xrow, nb, nb_ok);
      }
    });
  });
}

// One 16-row tile of matrix `m` with K-bit codes: the whole body of a thread block.
// prepare_x(), called by every thread once the kernel ahead has finished, returns the activations'
// row 0: a.x, or (kSharedX) the row the block has just rotated into its shared memory, which then
// every lane reads (batch 1: the mma columns g > 0 compute copies that are never stored).
template <int K, bool kMixed, bool kSharedX = false, typename PrepareX>
__device__ __forceinline__ void GemvTile(const GemvActivations& a, const GemvMatrix& m,
                                         int64_t tile_row,
                                         float (*partial)[kTileRows][kGemvMaxBatch],
                                         PrepareX&& prepare_x) {
  using detail::StaticFor;
  static_assert(detail::LastMmaReadingActivations<K>(0) >= 0 &&
                    detail::LastMmaReadingActivations<K>(1) >= 0 &&
                    detail::LastMmaReadingActivations<K>(2) >= 0 &&
                    detail::LastMmaReadingActivations<K>(3) >= 0,
                "every activation uint4 of a block is read by some mma");
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  // Rows past the end compute on the last row's data and are never stored.
  const int64_t r0 = Min64(tile_row + g, m.rows - 1);
  const int64_t r1 = Min64(tile_row + g + 8, m.rows - 1);
  const LaneRows l{m.codes + r0 * m.row_stride_vec,
                   m.codes + r1 * m.row_stride_vec,
                   m.scales + r0 * m.groups_per_row,
                   m.scales + r1 * m.groups_per_row,
                   static_cast<uint32_t>(m.row_stride_vec - 1),
                   static_cast<uint32_t>(m.groups_per_row - 1),
                   m.group_magic,
                   m.chunk_one_group};
  const uint32_t exponent = detail::kHalf2Exponent;
  const bool has_x = kSharedX || g < a.batch;
  const __half2 neg_center = __float2half2_rn(-ScalarGridCenter(K));
  const int blocks_per_row = a.blocks_per_row;
  const uint32_t chunks = (blocks_per_row + kBlocksPerChunk - 1) / kBlocksPerChunk;
  const uint32_t super_chunks = (chunks + 3) / 4;

  float acc[kAccSets<K, kMixed>][4];
  StaticFor<kAccSets<K, kMixed>>([&](auto i_c) {
    StaticFor<4>([&](auto j_c) { acc[decltype(i_c)::value][decltype(j_c)::value] = 0.0f; });
  });

  // Prologue: the first super-chunk's codes and scales (constant data, issued before the wait for
  // the kernel ahead, so they are in flight while it finishes), then block 0's activations.
  ChunkRegs<K> r;
  uint32_t chunk = static_cast<uint32_t>(warp) * 4 + t;
  bool chunk_ok = chunk < chunks;
  StaticFor<kBlocksPerChunk>([&](auto b_c) {
    LoadChunkPart<K, decltype(b_c)::value>(r, l, chunk);
  });
  detail::WaitForPredecessorsAfter(r.w0[0]);
  const uint4* xrow = prepare_x() + (kSharedX || !has_x ? 0 : g * a.x_stride_vec);
  uint32_t xw[16];
  StaticFor<4>([&](auto v_c) {
    LoadActivations<decltype(v_c)::value, kSharedX>(
        xw, xrow, chunk * kBlocksPerChunk,
        has_x && chunk_ok && chunk * kBlocksPerChunk < uint32_t(blocks_per_row));
  });

  for (uint32_t sc = warp; sc < super_chunks; sc += warps) {
    const uint32_t next = chunk + 4 * warps;  // this lane's chunk of the warp's next super-chunk
    const bool next_ok = next < chunks;
    StaticFor<kBlocksPerChunk>([&](auto b_c) {
      constexpr int kBlock = decltype(b_c)::value;
      // The next block's activations (this chunk's block kBlock+1, or the next chunk's block 0)
      // go into xw uint4 by uint4, each as soon as this block's last mma reading it is issued.
      const uint32_t nb = kBlock + 1 < kBlocksPerChunk ? chunk * kBlocksPerChunk + kBlock + 1
                                                       : next * kBlocksPerChunk;
      const bool nb_ok = has_x && (kBlock + 1 < kBlocksPerChunk ? chunk_ok : next_ok) &&
                         nb < uint32_t(blocks_per_row);
      DecodeBlock<K, kMixed, kSharedX, kBlock>(r, r.s0[kBlock], r.s1[kBlock], exponent,
                                               neg_center, xw, xrow, nb, nb_ok, acc);
      // Block kBlock's code registers are free: start the next chunk's loads that fit in them.
      LoadChunkPart<K, kBlock>(r, l, next);
    });
    chunk = next;
    chunk_ok = next_ok;
  }

  // d0,d1 = rows g, batch 2t..2t+1; d2,d3 = row g+8.
  float d[4];
  StaticFor<4>([&](auto j_c) {
    constexpr int j = decltype(j_c)::value;
    d[j] = acc[0][j];
    StaticFor<kAccSets<K, kMixed> - 1>([&](auto i_c) { d[j] += acc[decltype(i_c)::value + 1][j]; });
  });
  partial[warp][g][2 * t] = d[0];
  partial[warp][g][2 * t + 1] = d[1];
  partial[warp][g + 8][2 * t] = d[2];
  partial[warp][g + 8][2 * t + 1] = d[3];
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * kGemvMaxBatch; i += blockDim.x) {
    const int row = i / kGemvMaxBatch;
    const int b = i % kGemvMaxBatch;
    if (b >= a.batch || tile_row + row >= m.rows) continue;
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += partial[w][row][b];
    m.y[b * m.y_stride + tile_row + row] = sum;
  }
}

using detail::EntryOfTile;

// Blocks [m[i].first_tile, m[i + 1].first_tile) are matrix i's row tiles. kLoK..kHiK: the K the
// kernel is compiled for (the group's K must lie in it); the branch on K is block-uniform.
// kRotating: the block first rotates the activation row `r` into its dynamic shared memory
// (block_rotation.cuh: fp32 work [n], then the fp16 row) and multiplies that; otherwise r is
// unused and the activations are a.act.x.
template <int kLoK, int kHiK, bool kRotating>
__global__ void __launch_bounds__(kMaxWarps * 32, 2)
    ScalarCodecGemvKernel(const GemvGroupArgs a, const detail::BlockRotateInput r) {
  __shared__ float partial[kMaxWarps][kTileRows][kGemvMaxBatch];
  extern __shared__ float4 rotate_smem[];
  detail::AllowDependentLaunch();
  const int block = static_cast<int>(blockIdx.x);
  const GemvMatrix& m = a.m[EntryOfTile(a, block)];
  const int64_t tile_row = static_cast<int64_t>(block - m.first_tile) * kTileRows;
  auto prepare_x = [&]() -> const uint4* {
    if constexpr (kRotating) {
      float* work = reinterpret_cast<float*>(rotate_smem);
      __half* row = reinterpret_cast<__half*>(work + (1 << r.log_n));
      detail::RotateRowInBlock(r, work, row);
      return reinterpret_cast<const uint4*>(row);
    } else {
      return a.act.x;
    }
  };
  if constexpr (kLoK == kHiK) {
    GemvTile<kLoK, false, kRotating>(a.act, m, tile_row, partial, prepare_x);
  } else {
    const int bits = m.bits;
    detail::StaticFor<kHiK - kLoK + 1>([&](auto k_c) {
      constexpr int K = kLoK + decltype(k_c)::value;
      if (bits == K) GemvTile<K, true, kRotating>(a.act, m, tile_row, partial, prepare_x);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Streamed pipeline (sm_90): each block streams its row tiles through shared memory.
//
// Layout. A persistent grid (as many blocks of kStreamWarps = 8 warps as fit at once) walks the
// row tiles: block b takes tiles b, b + gridDim.x, ... A tile is one or more *units* of 16 rows ×
// up to 4096 columns (8 super-chunks, 512·K bytes per row), and warp w decodes super-chunk w of
// every unit (the register pipeline's split-K). Units stream through a ring of `stages`
// shared-memory stages, one bulk copy (bulk_copy.cuh) per row issued by lanes 0..15 of warp 0:
// the first `stages` units at kernel entry, before the dependent-launch wait (weights do not
// depend on the kernel ahead), and unit u + stages as soon as every warp is done with unit u (one
// block barrier per unit), so up to `stages` units are in flight across tile boundaries without
// holding registers. Lane (g, t) of warp w reads chunk t of super-chunk w for rows g and g+8 from
// the stage into the registers GemvTile decodes and runs GemvTile's block loop; at a tile's last
// unit the warps leave their partial sums in shared memory before that barrier (two buffers) and
// write y after it. Stage rows are 512·K + 16 bytes apart (the pad spreads the rows over the
// banks). Scales come one unit ahead through L1, activations as in GemvTile.
//
// Copies are whole row segments because the bulk-copy engine's cost is per copy: a form that
// copied 64·K bytes per row and warp streamed at ~1.6 TB/s, about one copy per 40 cycles per SM.
//
// Shared memory: [barriers: kStreamMaxStages] [partial: 2 × 8 × 16 × 8 fp32] [stages]
// [rotating: the transform's fp32 work row and fp16 row].
constexpr int kStreamWarps = 8;
constexpr int kStreamThreads = kStreamWarps * 32;
constexpr int kStreamMaxStages = 8;
constexpr int kStreamHeaderBytes = 128;
constexpr int kStreamPartialBytes = 2 * kStreamWarps * kTileRows * kGemvMaxBatch * 4;
constexpr int kStreamUnitBlocks = kStreamWarps * 4 * kBlocksPerChunk;  // code blocks per unit row
// Shared memory per block for everything: two blocks per SM (228 KiB) at 128 registers.
constexpr int kStreamBlockBytes = 110 << 10;

__host__ __device__ constexpr int StreamRowPitch(int k) { return kStreamUnitBlocks * 4 * k + 16; }
__host__ __device__ constexpr int StreamStageBytes(int k) { return kTileRows * StreamRowPitch(k); }

// A lane's fp16 scales for the 4 code blocks of one chunk, rows g and g+8.
struct ChunkScales {
  unsigned short s0[kBlocksPerChunk];
  unsigned short s1[kBlocksPerChunk];
};

// One tile's rows as a lane sees them: its two rows' scales (rows past the end read the last row).
struct TileLane {
  const GemvMatrix* m;
  int64_t tile_row;
  const uint16_t* scales0;
  const uint16_t* scales1;
};

__device__ __forceinline__ TileLane MakeTileLane(const GemvGroupArgs& a, int tile, int g) {
  const GemvMatrix& m = a.m[EntryOfTile(a, tile)];
  const int64_t tile_row = static_cast<int64_t>(tile - m.first_tile) * kTileRows;
  return TileLane{&m, tile_row, m.scales + Min64(tile_row + g, m.rows - 1) * m.groups_per_row,
                  m.scales + Min64(tile_row + g + 8, m.rows - 1) * m.groups_per_row};
}

__device__ __forceinline__ ChunkScales LoadChunkScales(const TileLane& l, uint32_t chunk) {
  ChunkScales c{};
  detail::StaticFor<kBlocksPerChunk>([&](auto b_c) {
    LoadBlockScales<decltype(b_c)::value>(c.s0, c.s1, l.scales0, l.scales1, chunk,
                                          l.m->group_magic,
                                          static_cast<uint32_t>(l.m->groups_per_row - 1),
                                          l.m->chunk_one_group);
  });
  return c;
}

// A block's ring of unit stages.
struct StreamRing {
  uint8_t* stages;
  uint64_t* full;  // one barrier per stage: its bytes have landed
  int count;
  int stage_bytes;
  int units_per_tile;
};

// Unit `unit` of this block (tile blockIdx.x + (unit / units_per_tile)·gridDim.x, part
// unit % units_per_tile) into its stage; called by warp 0, lane r < 16 copying row r's segment.
__device__ __forceinline__ void IssueUnit(const GemvGroupArgs& a, const StreamRing& ring,
                                          uint32_t unit) {
  const int lane = threadIdx.x & 31;
  const int slot = static_cast<int>(unit % ring.count);
  const int tile = static_cast<int>(blockIdx.x + (unit / ring.units_per_tile) * gridDim.x);
  const int part = static_cast<int>(unit % ring.units_per_tile);
  const GemvMatrix& m = a.m[EntryOfTile(a, tile)];
  const int64_t tile_row = static_cast<int64_t>(tile - m.first_tile) * kTileRows;
  const int rows = static_cast<int>(Min64(kTileRows, m.rows - tile_row));
  const int64_t unit_bytes = int64_t{kStreamUnitBlocks} * 4 * m.bits;
  const int64_t offset = part * unit_bytes;  // < the row's bytes: part·8 < super-chunks
  const uint32_t bytes = static_cast<uint32_t>(Min64(unit_bytes, m.row_stride_vec * 16 - offset));
  if (lane == 0) detail::ArriveExpectBytes(ring.full + slot, bytes * rows);
  if (lane < rows) {
    const uint8_t* row =
        reinterpret_cast<const uint8_t*>(m.codes + (tile_row + lane) * m.row_stride_vec);
    detail::BulkCopy(ring.stages + slot * ring.stage_bytes + lane * StreamRowPitch(m.bits),
                     row + offset, bytes, ring.full + slot);
  }
}

// One unit for a warp: K-bit codes of chunk `chunk` from stage unit % count, accumulated into acc;
// xw holds the chunk's block-0 activations on entry and `next_chunk`'s on exit.
template <int K, bool kMixed, bool kSharedX>
__device__ __forceinline__ void StreamedUnit(const GemvActivations& a, const StreamRing& ring,
                                             uint32_t unit, uint32_t chunk, uint32_t next_chunk,
                                             bool has_x, const uint4* xrow, const ChunkScales& sc,
                                             uint32_t (&xw)[16], float (&acc)[4][4]) {
  using detail::StaticFor;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int slot = static_cast<int>(unit % ring.count);
  detail::WaitBarrier(ring.full + slot, (unit / ring.count) & 1);
  const uint8_t* stage = ring.stages + slot * ring.stage_bytes;
  const uint4* row0 =
      reinterpret_cast<const uint4*>(stage + g * StreamRowPitch(K)) + (warp * 4 + t) * K;
  const uint4* row1 =
      reinterpret_cast<const uint4*>(stage + (g + 8) * StreamRowPitch(K)) + (warp * 4 + t) * K;
  ChunkRegs<K> r;
  StaticFor<K>([&](auto u_c) {
    constexpr int u = decltype(u_c)::value;
    SetChunkWords<u>(r, row0[u], row1[u]);
  });

  const uint32_t exponent = detail::kHalf2Exponent;
  const __half2 neg_center = __float2half2_rn(-ScalarGridCenter(K));
  const uint32_t blocks_per_row = static_cast<uint32_t>(a.blocks_per_row);
  StaticFor<kBlocksPerChunk>([&](auto b_c) {
    constexpr int kBlock = decltype(b_c)::value;
    const uint32_t nb = kBlock + 1 < kBlocksPerChunk ? chunk * kBlocksPerChunk + kBlock + 1
                                                     : next_chunk * kBlocksPerChunk;
    DecodeBlock<K, kMixed, kSharedX, kBlock>(r, sc.s0[kBlock], sc.s1[kBlock], exponent,
                                             neg_center, xw, xrow, nb, has_x && nb < blocks_per_row,
                                             acc);
  });
}

// kRotating: the block first rotates the activation row `r` into the shared memory after the
// ring (block_rotation.cuh) and multiplies that, as ScalarCodecGemvKernel does.
template <int kLoK, int kHiK, bool kRotating>
__global__ void __launch_bounds__(kStreamThreads, 2)
    StreamedGemvKernel(const GemvGroupArgs a, const detail::BlockRotateInput r, int tiles,
                       int stages, int stage_bytes) {
  extern __shared__ __align__(128) uint8_t stream_smem[];
  detail::AllowDependentLaunch();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  auto partial = reinterpret_cast<float (*)[kStreamWarps][kTileRows][kGemvMaxBatch]>(
      stream_smem + kStreamHeaderBytes);
  const int super_chunks = (a.act.blocks_per_row + 4 * kBlocksPerChunk - 1) / (4 * kBlocksPerChunk);
  StreamRing ring;
  ring.full = reinterpret_cast<uint64_t*>(stream_smem);
  ring.stages = stream_smem + kStreamHeaderBytes + kStreamPartialBytes;
  ring.count = stages;
  ring.stage_bytes = stage_bytes;
  ring.units_per_tile = (super_chunks + kStreamWarps - 1) / kStreamWarps;
  const int block_tiles = (tiles - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1;
  const uint32_t block_units = static_cast<uint32_t>(block_tiles * ring.units_per_tile);
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) detail::InitBarrier(ring.full + s, 1);
    detail::InitBarriersDone();
  }
  __syncthreads();
  if (warp == 0) {
    for (uint32_t u = 0; u < block_units && u < static_cast<uint32_t>(stages); ++u) IssueUnit(a, ring, u);
  }

  const bool has_x = kRotating || g < a.act.batch;
  detail::WaitForPredecessors();
  const uint4* xrow = a.act.x + (has_x ? g * a.act.x_stride_vec : 0);
  if constexpr (kRotating) {
    float* work = reinterpret_cast<float*>(ring.stages + stages * stage_bytes);
    __half* row = reinterpret_cast<__half*>(work + (1 << r.log_n));
    detail::RotateRowInBlock(r, work, row);
    xrow = reinterpret_cast<const uint4*>(row);
  }
  // This lane's 128-column chunk of super-chunk sc.
  auto chunk_of = [&](int sc) { return static_cast<uint32_t>(sc) * 4 + t; };
  const uint32_t blocks_per_row = static_cast<uint32_t>(a.act.blocks_per_row);
  uint32_t xw[16];
  detail::StaticFor<4>([&](auto v_c) {
    LoadActivations<decltype(v_c)::value, kRotating>(
        xw, xrow, chunk_of(warp) * kBlocksPerChunk,
        has_x && chunk_of(warp) * kBlocksPerChunk < blocks_per_row);
  });
  TileLane lane_tile = MakeTileLane(a, static_cast<int>(blockIdx.x), g);
  ChunkScales scales = LoadChunkScales(lane_tile, chunk_of(warp));

  uint32_t unit = 0;
  int buf = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, buf ^= 1) {
    const TileLane cur = lane_tile;
    const GemvMatrix& m = *cur.m;
    float acc[4][4] = {};
    for (int part = 0; part < ring.units_per_tile; ++part, ++unit) {
      const int sc = part * kStreamWarps + warp;
      // The next unit's scales go out now, so their latency hides behind this unit.
      const bool last_part = part + 1 == ring.units_per_tile;
      const int next_tile = last_part ? tile + static_cast<int>(gridDim.x) : tile;
      const int next_sc = last_part ? warp : sc + kStreamWarps;
      if (last_part && next_tile < tiles) lane_tile = MakeTileLane(a, next_tile, g);
      const ChunkScales next_scales =
          next_tile < tiles ? LoadChunkScales(lane_tile, chunk_of(next_sc)) : scales;
      if (sc < super_chunks) {
        if constexpr (kLoK == kHiK) {
          StreamedUnit<kLoK, false, kRotating>(a.act, ring, unit, chunk_of(sc), chunk_of(next_sc),
                                               has_x, xrow, scales, xw, acc);
        } else {
          const int bits = m.bits;
          detail::StaticFor<kHiK - kLoK + 1>([&](auto k_c) {
            constexpr int K = kLoK + decltype(k_c)::value;
            if (bits == K) {
              StreamedUnit<K, true, kRotating>(a.act, ring, unit, chunk_of(sc),
                                               chunk_of(next_sc), has_x, xrow, scales, xw, acc);
            }
          });
        }
      } else {
        // No super-chunk here (the row's last unit is short): xw must still move on.
        const uint32_t nb = chunk_of(next_sc) * kBlocksPerChunk;
        detail::StaticFor<4>([&](auto v_c) {
          LoadActivations<decltype(v_c)::value, kRotating>(xw, xrow, nb, has_x && nb < blocks_per_row);
        });
      }
      scales = next_scales;
      if (last_part) {
        // d0,d1 = row g, batch 2t..2t+1; d2,d3 = row g+8.
        float d[4];
        detail::StaticFor<4>([&](auto j_c) {
          constexpr int j = decltype(j_c)::value;
          d[j] = acc[0][j] + acc[1][j] + acc[2][j] + acc[3][j];
        });
        partial[buf][warp][g][2 * t] = d[0];
        partial[buf][warp][g][2 * t + 1] = d[1];
        partial[buf][warp][g + 8][2 * t] = d[2];
        partial[buf][warp][g + 8][2 * t + 1] = d[3];
      }
      // Every warp is done with this unit's stage (and, at a tile's end, has left its sums).
      __syncthreads();
      if (warp == 0 && unit + stages < block_units) IssueUnit(a, ring, unit + stages);
    }
    static_assert(kStreamThreads >= kTileRows * kGemvMaxBatch, "one thread per output");
    const int row = threadIdx.x / kGemvMaxBatch;
    const int b = threadIdx.x % kGemvMaxBatch;
    if (threadIdx.x < kTileRows * kGemvMaxBatch && b < a.act.batch && cur.tile_row + row < m.rows) {
      float sum = 0.0f;
      for (int w = 0; w < kStreamWarps; ++w) sum += partial[buf][w][row][b];
      m.y[b * m.y_stride + cur.tile_row + row] = sum;
    }
  }
}

using GemvKernelFn = void (*)(GemvGroupArgs, detail::BlockRotateInput);
using StreamedKernelFn = void (*)(GemvGroupArgs, detail::BlockRotateInput, int, int, int);

// The narrowest instantiation whose K range covers [lo, hi]: instance(lo_c, hi_c) with the range
// as std::integral_constant.
template <typename Instance>
auto PickByBits(int lo, int hi, Instance instance) {
  using C = std::integral_constant<int, 1>;
  if (lo == hi) {
    switch (lo) {
      case 1: return instance(C{}, C{});
      case 2: return instance(std::integral_constant<int, 2>{}, std::integral_constant<int, 2>{});
      case 3: return instance(std::integral_constant<int, 3>{}, std::integral_constant<int, 3>{});
      case 4: return instance(std::integral_constant<int, 4>{}, std::integral_constant<int, 4>{});
      case 5: return instance(std::integral_constant<int, 5>{}, std::integral_constant<int, 5>{});
      case 6: return instance(std::integral_constant<int, 6>{}, std::integral_constant<int, 6>{});
      case 7: return instance(std::integral_constant<int, 7>{}, std::integral_constant<int, 7>{});
      default: return instance(std::integral_constant<int, 8>{}, std::integral_constant<int, 8>{});
    }
  }
  return hi <= 4 ? instance(C{}, std::integral_constant<int, 4>{})
                 : instance(C{}, std::integral_constant<int, 8>{});
}

template <bool kRotating>
GemvKernelFn PickKernel(int lo, int hi) {
  return PickByBits(lo, hi, [](auto l, auto h) -> GemvKernelFn {
    return ScalarCodecGemvKernel<decltype(l)::value, decltype(h)::value, kRotating>;
  });
}

template <bool kRotating>
StreamedKernelFn PickStreamedKernel(int lo, int hi) {
  return PickByBits(lo, hi, [](auto l, auto h) -> StreamedKernelFn {
    return StreamedGemvKernel<decltype(l)::value, decltype(h)::value, kRotating>;
  });
}

// `where` prefixes every message: "LaunchScalarCodecGemv: " or "...Group: entry i: ".
// `own_x`: the launch rotates its own activations (x and x_stride are not read).
absl::Status Validate(const ScalarCodecGemvParams& p, const std::string& where, bool own_x) {
  auto bad = [&](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(where, parts...));
  };
  if (p.bits < kScalarMinBits || p.bits > kScalarMaxBits) return bad("bits ", p.bits, " not 1..8");
  if (p.rows < 1 || p.cols < 1) return bad("shape [", p.rows, ", ", p.cols, "] must be positive");
  if (p.cols > kGemvMaxCols) return bad("cols ", p.cols, " exceeds ", kGemvMaxCols);
  if (p.group_size < 32 || p.group_size % 32 != 0 || p.group_size > kScalarMaxGroupSize)
    return bad("group_size ", p.group_size, " must be a positive multiple of 32 up to ",
               kScalarMaxGroupSize);
  if (p.blocks_per_row != (p.cols + 31) / 32 ||
      p.groups_per_row != (p.cols + p.group_size - 1) / p.group_size ||
      p.row_stride_words < p.blocks_per_row * p.bits || p.row_stride_words % 4 != 0) {
    return bad("layout fields (blocks_per_row, groups_per_row, row_stride_words) do not match [",
               p.rows, ", ", p.cols, "] at ", p.bits, " bits (use MakeGemvParams)");
  }
  if (p.batch < 1 || p.batch > kGemvMaxBatch)
    return bad("batch ", p.batch, " outside [1, ", kGemvMaxBatch, "]");
  if (p.codes == nullptr || p.scales == nullptr || (p.x == nullptr && !own_x) || p.y == nullptr)
    return bad("codes, scales, x and y must be non-null");
  if (reinterpret_cast<uintptr_t>(p.codes) % 16 != 0 || reinterpret_cast<uintptr_t>(p.x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(p.scales) % 2 != 0 || reinterpret_cast<uintptr_t>(p.y) % 4 != 0)
    return bad("codes and x must be 16-byte aligned, scales 2-byte, y 4-byte");
  if (own_x) {
    if (p.batch != 1) return bad("batch ", p.batch, " must be 1 for a rotating launch");
  } else if (p.x_stride < p.blocks_per_row * 32 || p.x_stride % 8 != 0)
    return bad("x_stride ", p.x_stride, " must be >= ", p.blocks_per_row * 32,
               " and a multiple of 8");
  if (p.y_stride < p.rows) return bad("y_stride ", p.y_stride, " must be >= rows ", p.rows);
  return absl::OkStatus();
}

// The public entry point a launch came through; messages start with its name.
enum class Api { kSingle, kGroup, kRotating };

const char* ApiName(Api api) {
  switch (api) {
    case Api::kSingle: return "LaunchScalarCodecGemv: ";
    case Api::kGroup: return "LaunchScalarCodecGemvGroup: ";
    default: return "LaunchScalarCodecGemvGroupRotating: ";
  }
}

// Entries are named in the messages of the grouped entry points.
bool AnyTiled(absl::Span<const ScalarCodecGemvParams> group) {
  return std::any_of(group.begin(), group.end(), [](const ScalarCodecGemvParams& p) { return p.tiled; });
}

absl::Status ValidateGroup(absl::Span<const ScalarCodecGemvParams> group, Api api_kind) {
  const char* api = ApiName(api_kind);
  const bool grouped = api_kind != Api::kSingle;
  const bool own_x = api_kind == Api::kRotating;
  if (group.empty() || group.size() > static_cast<size_t>(kGemvMaxGroup))
    return absl::InvalidArgumentError(absl::StrCat(api, "group size ", group.size(),
                                                   " outside [1, ", kGemvMaxGroup, "]"));
  int64_t tiles = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    const ScalarCodecGemvParams& p = group[i];
    const std::string where = grouped ? absl::StrCat(api, "entry ", i, ": ") : std::string(api);
    if (absl::Status s = Validate(p, where, own_x); !s.ok()) return s;
    tiles += (p.rows + kTileRows - 1) / kTileRows;
    if (tiles > INT_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "rows ", p.rows, " exceed one launch's grid"));
    }
    if (i == 0) continue;
    const ScalarCodecGemvParams& p0 = group[0];
    auto differs = [&](const char* field, auto v, auto v0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, field, " ", v, " differs from entry 0's ", v0, " (one shared x)"));
    };
    if (p.cols != p0.cols) return differs("cols", p.cols, p0.cols);
    if (p.batch != p0.batch) return differs("batch", p.batch, p0.batch);
    if (own_x) continue;
    if (p.x_stride != p0.x_stride) return differs("x_stride", p.x_stride, p0.x_stride);
    if (p.x != p0.x) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "x differs from entry 0's (one shared x)"));
    }
  }
  return absl::OkStatus();
}

// The range [lo, hi] of the group's K (PickKernel's arguments).
std::pair<int, int> BitsRange(absl::Span<const ScalarCodecGemvParams> group) {
  int lo = kScalarMaxBits, hi = kScalarMinBits;
  for (const ScalarCodecGemvParams& p : group) {
    lo = std::min(lo, p.bits);
    hi = std::max(hi, p.bits);
  }
  return {lo, hi};
}

// A rotating kernel with its dynamic shared memory limit raised to what `cols` needs (above the
// default 48 KiB at 8192 columns); also needed before an occupancy query.
absl::Status RotatingKernel(int lo, int hi, int64_t cols, GemvKernelFn* kernel, int64_t* smem) {
  *kernel = PickKernel<true>(lo, hi);
  *smem = detail::BlockRotateSharedBytes(cols);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      *kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(*smem)));
  return absl::OkStatus();
}

// Whether a launch runs the streamed pipeline: forced, or (kAuto) where it is the faster one
// (sm_90 and up).
bool UseStreamed(const GemvTuning& tuning, absl::Span<const ScalarCodecGemvParams> group) {
  if (tuning.pipeline != GemvPipeline::kAuto) return tuning.pipeline == GemvPipeline::kStreamed;
  int sm = 0;
  return tuning.warps_per_block == 0 && StreamedGemvEnabled() &&
         detail::CurrentDeviceSm(&sm).ok() && sm >= 90 && PreferStreamedGemv(group);
}

// The streamed kernel over `tiles` row tiles: as many resident blocks as the device holds (at
// the ring's shared memory), each with the same number of tiles (the last ones fewer).
// rotate: a rotating launch's input (its transform takes shared memory from the ring's budget).
absl::Status LaunchStreamed(const GemvGroupArgs& a, const detail::BlockRotateInput* rotate,
                            int64_t tiles, int lo, int hi, cudaStream_t stream) {
  int sm = 0, sms = 0;
  if (absl::Status s = detail::CurrentDeviceSm(&sm); !s.ok()) return s;
  if (absl::Status s = detail::CurrentDeviceMultiprocessors(&sms); !s.ok()) return s;
  if (sm < 90) {
    return absl::FailedPreconditionError(absl::StrCat(
        "LaunchScalarCodecGemvGroup: pipeline kStreamed needs sm_90 or later, device is sm_", sm));
  }
  const StreamedKernelFn kernel =
      rotate ? PickStreamedKernel<true>(lo, hi) : PickStreamedKernel<false>(lo, hi);
  const int rotate_bytes =
      rotate ? static_cast<int>(detail::BlockRotateSharedBytes(int64_t{1} << rotate->log_n)) : 0;
  const int stage_bytes = StreamStageBytes(hi);  // the widest entry's rows, not the kernel's K range
  const int fixed_bytes = kStreamHeaderBytes + kStreamPartialBytes + rotate_bytes;
  const int stages =
      std::clamp((kStreamBlockBytes - fixed_bytes) / stage_bytes, 2, kStreamMaxStages);
  const int smem = fixed_bytes + stages * stage_bytes;
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int resident = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kStreamThreads, smem));
  const int64_t slots = int64_t{std::max(resident, 1)} * sms;
  const int64_t per_block = (tiles + slots - 1) / slots;
  const int64_t blocks = (tiles + per_block - 1) / per_block;
  return detail::LaunchKernel({dim3(static_cast<unsigned>(blocks)), dim3(kStreamThreads),
                               static_cast<size_t>(smem)},
                              stream, kernel, a, rotate ? *rotate : detail::BlockRotateInput{},
                              static_cast<int>(tiles), stages, stage_bytes);
}

// rotate: the activation row a rotating launch forms (Api::kRotating), already validated.
absl::Status Launch(absl::Span<const ScalarCodecGemvParams> group, Api api,
                    const GemvTuning& tuning, const detail::BlockRotateInput* rotate,
                    cudaStream_t stream) {
  if (AnyTiled(group)) {
    if (api == Api::kRotating) {
      return absl::InvalidArgumentError(absl::StrCat(ApiName(api), "tiled weights have no rotating launch"));
    }
    return LaunchScalarCodecGemvTiled(group, TiledGemvTuning{.warps_per_block = tuning.warps_per_block}, stream);
  }
  if (absl::Status s = ValidateGroup(group, api); !s.ok()) return s;
  if (tuning.warps_per_block < 0 || tuning.warps_per_block > kMaxWarps) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemvGroup: warps_per_block ",
                                                   tuning.warps_per_block, " outside [0, 8]"));
  }
  if (tuning.pipeline == GemvPipeline::kStreamed && tuning.warps_per_block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(ApiName(api),
                                                   "pipeline kStreamed takes no warps_per_block (",
                                                   tuning.warps_per_block, ")"));
  }
  GemvLaunchPlan plan;
  if (tuning.warps_per_block == 0) {
    int sms = 0;
    if (absl::Status s = detail::CurrentDeviceMultiprocessors(&sms); !s.ok()) return s;
    plan = PlanScalarCodecGemv(group, sms);
  } else {
    plan = PlanScalarCodecGemv(group, 1);
    plan.warps = tuning.warps_per_block;
  }
  const ScalarCodecGemvParams& p0 = group[0];
  GemvGroupArgs a{};
  a.count = static_cast<int>(group.size());
  a.act.batch = p0.batch;
  a.act.blocks_per_row = static_cast<int>(p0.blocks_per_row);
  a.act.x = reinterpret_cast<const uint4*>(p0.x);
  a.act.x_stride_vec = p0.x_stride / 8;
  int64_t tiles = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    const ScalarCodecGemvParams& p = group[i];
    const uint32_t blocks_per_group = static_cast<uint32_t>(p.group_size / 32);
    a.m[i] = GemvMatrix{reinterpret_cast<const uint4*>(p.codes),
                        p.scales,
                        p.y,
                        p.rows,
                        p.row_stride_words / 4,
                        p.groups_per_row,
                        p.y_stride,
                        static_cast<uint32_t>(((uint64_t{1} << 31) + blocks_per_group - 1) /
                                              blocks_per_group),
                        p.bits,
                        static_cast<int>(tiles),
                        p.group_size % (kBlocksPerChunk * 32) == 0};
    tiles += (p.rows + kTileRows - 1) / kTileRows;
  }
  const auto [lo, hi] = BitsRange(group);
  if (UseStreamed(tuning, group)) return LaunchStreamed(a, rotate, plan.tiles, lo, hi, stream);
  const dim3 grid(static_cast<unsigned>(plan.tiles)), threads(static_cast<unsigned>(plan.warps * 32));
  if (rotate == nullptr) {
    return detail::LaunchKernel({grid, threads}, stream, PickKernel<false>(lo, hi), a,
                                detail::BlockRotateInput{});
  }
  GemvKernelFn kernel = nullptr;
  int64_t smem = 0;
  if (absl::Status s = RotatingKernel(lo, hi, p0.cols, &kernel, &smem); !s.ok()) return s;
  return detail::LaunchKernel({grid, threads, static_cast<size_t>(smem)}, stream, kernel, a,
                              *rotate);
}

bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

bool Overlaps(const float* a, const float* b, int64_t n) {
  if (a == nullptr || b == nullptr) return false;
  return a < b + n && b < a + n;
}

// The device-side description of a rotating launch's input, or INVALID_ARGUMENT naming the field.
absl::StatusOr<detail::BlockRotateInput> DescribeRotatingInput(
    absl::Span<const ScalarCodecGemvParams> group, const GemvRotatingInput& in) {
  const char* api = ApiName(Api::kRotating);
  auto bad = [&](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(api, parts...)); };
  const RotationDesc& r = in.rotation;
  if (group.empty()) return bad("group size 0 outside [1, ", kGemvMaxGroup, "]");
  const int64_t n = group[0].cols;
  if (r.n != n || r.base_order != 1 || r.pow2_order != n || !IsPowerOfTwo(n) ||
      n < kGemvRotateMinCols || n > kGemvRotateMaxCols) {
    return bad("rotation (n ", r.n, ", p ", r.base_order, ", L ", r.pow2_order,
               ") must be a plain Walsh-Hadamard rotation of the group's cols ", n,
               ", a power of two in [", kGemvRotateMinCols, ", ", kGemvRotateMaxCols, "]");
  }
  const RotateNormInput& norm = in.norm;
  const bool rms = norm.residual != nullptr;
  if (rms == (in.x != nullptr)) return bad("exactly one of x and norm.residual must be set");
  if (rms && (norm.weight == nullptr || in.residual_out == nullptr))
    return bad("a norm input needs norm.weight and residual_out");
  const float* pointers[] = {in.x, norm.residual, norm.delta, norm.weight, in.residual_out};
  for (const float* ptr : pointers) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      return bad("x, norm.residual, norm.delta, norm.weight and residual_out must be 16-byte aligned");
  }
  if (Overlaps(in.residual_out, norm.residual, n) || Overlaps(in.residual_out, norm.delta, n))
    return bad("residual_out overlaps norm.residual or norm.delta (every block reads them)");
  int log_n = 0;
  while ((int64_t{1} << log_n) < n) ++log_n;
  detail::BlockRotateInput d;
  d.x = in.x;
  d.residual = norm.residual;
  d.delta = norm.delta;
  d.weight = norm.weight;
  d.weight_offset = norm.weight_offset;
  d.eps = norm.eps;
  d.residual_out = in.residual_out;
  d.seed = r.seed;
  d.norm = r.norm;
  d.log_n = log_n;
  return d;
}

}  // namespace

GemvLaunchPlan PlanScalarCodecGemv(absl::Span<const ScalarCodecGemvParams> group,
                                   int multiprocessors) {
  GemvLaunchPlan plan;
  for (const ScalarCodecGemvParams& p : group) plan.tiles += (p.rows + kTileRows - 1) / kTileRows;
  if (group.empty()) return plan;
  const int64_t super_chunks =
      (group[0].blocks_per_row * 32 + kSuperChunkCols - 1) / kSuperChunkCols;
  const int64_t sms = std::max(multiprocessors, 1);
  for (int w = static_cast<int>(std::clamp<int64_t>(super_chunks, 1, kMaxWarps)); w > 1; --w) {
    if (plan.tiles <= sms * (kResidentWarpsPerSm / w)) {
      plan.warps = w;
      return plan;
    }
  }
  // Too many tiles for one wave of multi-warp blocks: several waves of kTallWarps-warp blocks at
  // small batches; from batch 5 on the single wave of one-warp blocks stays (the engine's batch-16
  // step was 4.6% slower with 4-warp blocks, batch 1 3.7% faster, batch 4 1.8%).
  plan.warps = group[0].batch <= kTallWarpsMaxBatch
                   ? static_cast<int>(std::clamp<int64_t>(super_chunks, 1, kTallWarps))
                   : 1;
  return plan;
}

ScalarCodecGemvParams MakeGemvParams(const ScalarCodecLayout& layout, const void* device_blob) {
  ScalarCodecGemvParams p;
  p.rows = layout.rows;
  p.cols = layout.cols;
  p.bits = layout.bits;
  p.group_size = layout.group_size;
  p.blocks_per_row = layout.blocks_per_row;
  p.groups_per_row = layout.groups_per_row;
  p.row_stride_words = layout.row_stride_words;
  p.codes = static_cast<const uint32_t*>(device_blob);
  p.scales = device_blob == nullptr ? nullptr
                                    : reinterpret_cast<const uint16_t*>(
                                          static_cast<const uint8_t*>(device_blob) +
                                          layout.scales_offset);
  p.y_stride = layout.rows;
  p.x_stride = layout.blocks_per_row * 32;
  return p;
}

bool IsSupported(int sm, const ScalarCodecGemvParams& params) {
  if (params.tiled) return sm >= 80 && CheckScalarCodecGemvTiled({&params, 1}).ok();
  return sm >= 80 && ValidateGroup({&params, 1}, Api::kSingle).ok();
}

bool IsSupported(int sm, absl::Span<const ScalarCodecGemvParams> group) {
  if (AnyTiled(group)) return sm >= 80 && CheckScalarCodecGemvTiled(group).ok();
  return sm >= 80 && ValidateGroup(group, Api::kGroup).ok();
}

absl::Status LaunchScalarCodecGemv(const ScalarCodecGemvParams& params, cudaStream_t stream) {
  return Launch({&params, 1}, Api::kSingle, GemvTuning{}, nullptr, stream);
}

absl::Status LaunchScalarCodecGemvGroup(absl::Span<const ScalarCodecGemvParams> group,
                                        cudaStream_t stream) {
  return Launch(group, Api::kGroup, GemvTuning{}, nullptr, stream);
}

absl::Status LaunchScalarCodecGemvGroup(absl::Span<const ScalarCodecGemvParams> group,
                                        const GemvTuning& tuning, cudaStream_t stream) {
  return Launch(group, Api::kGroup, tuning, nullptr, stream);
}

absl::Status LaunchScalarCodecGemvGroupRotating(absl::Span<const ScalarCodecGemvParams> group,
                                                const GemvRotatingInput& input,
                                                cudaStream_t stream) {
  absl::StatusOr<detail::BlockRotateInput> rotate = DescribeRotatingInput(group, input);
  if (!rotate.ok()) return rotate.status();
  return Launch(group, Api::kRotating, GemvTuning{}, &*rotate, stream);
}

namespace {
std::atomic<bool> streamed_gemv_enabled{false};
}  // namespace

void SetStreamedGemv(bool enabled) { streamed_gemv_enabled.store(enabled); }
bool StreamedGemvEnabled() { return streamed_gemv_enabled.load(); }

bool PreferStreamedGemv(absl::Span<const ScalarCodecGemvParams> group) {
  if (group.empty()) return false;
  const auto [lo, hi] = BitsRange(group);
  // H200, gpu_gemv_bench --groups_only, both forced (docs/KERNELS.md "Streamed pipeline"):
  // faster for the 4096-wide groups of at most 8192 rows at K >= 3 (8B q/k/v 9.17 → 8.66 µs,
  // o_proj 7.17 → 5.88, k_proj 5.71 → 4.15); even on gate/up (27.86 → 28.01) and slower at
  // K = 2 (q_proj 4.79 → 5.03) and on longer rows (70B down_proj 41.42 → 47.93), where 8 warps
  // per persistent block decode less in parallel than the register kernel's one-wave grids.
  int64_t rows = 0;
  for (const ScalarCodecGemvParams& p : group) rows += p.rows;
  return group[0].batch == 1 && lo >= 3 && group[0].cols <= 4096 && rows <= 8192;
}

bool PreferRotatingGemv(absl::Span<const ScalarCodecGemvParams> group,
                        const GemvRotatingInput& input) {
  if (AnyTiled(group) || !ValidateGroup(group, Api::kRotating).ok() || !DescribeRotatingInput(group, input).ok())
    return false;
  int sm = 0, sms = 0;
  if (!detail::CurrentDeviceSm(&sm).ok() || sm < 80 ||
      !detail::CurrentDeviceMultiprocessors(&sms).ok()) {
    return false;
  }
  const GemvLaunchPlan plan = PlanScalarCodecGemv(group, sms);
  const auto [lo, hi] = BitsRange(group);
  // The [1, 8] kernel's bodies already fill the 128 registers; with the transform's live values
  // on top it spills ~600 bytes per thread (ptxas -v), where every other instantiation spills
  // at most 40.
  if (lo != hi && hi > 4) return false;
  if (group[0].cols > kGemvRotatePreferMaxCols) return false;
  GemvKernelFn kernel = nullptr;
  int64_t smem = 0;
  int resident = 0;
  if (!RotatingKernel(lo, hi, group[0].cols, &kernel, &smem).ok() ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, plan.warps * 32,
                                                    static_cast<size_t>(smem)) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later launches do not report it
    return false;
  }
  return plan.tiles <= int64_t{resident} * sms;
}

}  // namespace bitloom::kernels::cuda
