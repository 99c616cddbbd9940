// Paged attention kernels (see paged_attention.h; design and numbers in docs/KERNELS.md).
//
// Decode (PagedDecodeKernel, then DecodeCombineKernel). Grid (num_splits, num_kv_heads·head_chunks,
// batch), 128 threads. A block serves H = heads_per_block query heads that share one kv head, over
// one split of one sequence's visible range [start, len): split s covers [start + s·split_len,
// start + (s+1)·split_len) ∩ [start, len), where start = max(0, len − window) (or 0). Every K/V row
// it reads is therefore visible, so no per-key mask beyond the range test.
//   - Lanes: a token's head slice (D fp16 = D·2 bytes) is read by D/8 lanes with one 16-byte load
//     each (8 lanes at D = 64, 16 at 128, 32 at 256), so a warp reads 32/(D/8) tokens at once and
//     the 4 warps 4·32/(D/8) "streams" of tokens. Each stream walks the split with stride
//     streams·U (U = 4 tokens in flight per lane, 2 when H = 8 to save registers).
//   - Dependent launch: the first iteration's K/V rows (all but the newest, which the RoPE kernel
//     ahead writes) are loaded into registers, and L2 asked for the split's next rows, before the
//     wait for the kernels ahead; after it only q (and the newest row) stand between the wait
//     and the first scores.
//   - GQA: the K and V loads of a token serve all H heads (each lane holds the 8 dims it reads of
//     each head's q in registers), so the kv bytes are read once per block, never per query head.
//   - Scores: 8 FMAs per head per lane, then a butterfly over the token's D/8 lanes. Softmax is
//     online per stream (max m, sum l, accumulator of the lane's 8 dims, per head), with one
//     rescale per U tokens.
//   - End: the streams meet in shared memory (m, l: [streams][H]; acc: [streams][H][D], 32 KB at
//     H = 8 for every D since streams·D = 1024) and are merged. One split: the normalised output
//     is written directly. Several: the block writes its (max, sum) and unnormalised accumulator to
//     the workspace and the combine kernel (grid (num_heads, batch), D threads) merges the splits.
// The split count (PlanDecodeAttention) aims at ~kTargetBlocks blocks in flight with at least
// kMinSplitLen tokens per split; it depends on shapes only, so the launch can be captured in a
// graph.
//
// Prefill, tensor cores (PagedPrefillMmaKernel, the default): flash-attention 2 on
// mma.sync.m16n8k16 with fp16 Q/P and fp32 accumulation, 64 query rows per block; its layout
// comment is in paged_prefill_attention_mma.cuh.
//
// Prefill, fp32 (PagedPrefillKernel, params.exact_fp32). Grid (ceil(num_tokens·group / 32),
// num_kv_heads), 128 threads. The block's 32 query rows are consecutive (token, head-of-the-group)
// pairs of one kv head, so GQA heads share K/V tiles and no row is padding. Warp w owns rows
// 8w..8w+7.
//   - Shared memory (dynamic): Q rows fp32 [32][D]; a K tile fp16 [32 keys][D/2 + 1 words]
//     (odd word stride: lane j reads key j's row without bank conflicts); a V tile fp16
//     [32][D/2 words]; each warp's probabilities [32 keys][8 rows] fp32 (one key's 8 rows are two
//     float4 broadcasts); the rows' sequence and position. D = 256: 68.5 KB, within every sm_80+
//     part's opt-in limit.
//   - Sequences: the block loops over the distinct sequences of its rows (one pass in the usual
//     case, adjacent tokens of one sequence); a pass loads that sequence's key tiles of 32 keys
//     from min(window start) to max(position) of its rows, and rows of other sequences are masked.
//   - Scores: lane j computes key j against the warp's 8 rows (fp32 FMAs, Q broadcast from shared
//     memory), masks by position and window, and the warp updates each row's online softmax (max
//     by butterfly; the sum is kept per lane and reduced at the end). P·V: lane owns dim pairs
//     2·(lane + 32i), i < D/64, and reads p of one key for its 8 rows with two float4 broadcasts.
//   - Warps whose rows all end before a tile (causal) or start after it (window) skip its math.
// fp32 FMAs throughout: AttentionF32's arithmetic up to summation order, for reference runs.

#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/paged_attention.h"
#include "dependent_launch.cuh"
#include "launch.h"
#include "paged_attention.cuh"
#include "paged_prefill_attention_mma.cuh"

namespace bitloom::kernels::cuda {
namespace {

using detail::ExpDiff;

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;
constexpr int64_t kTargetBlocks = 512;  // ~4 per SM on H100/H200 (132 SMs)
// Below this a split's fixed cost dominates: 32 tokens (one loop iteration of a block at head_dim
// 128, 8 token streams × 4 in flight) for a single sequence, 64 from two on, where the combine's
// per-split loads are repeated per sequence. H200, Llama-3-8B at 4.0 bits (docs/KERNELS.md):
// batch 1 2.13-2.15 ms at 32 against 2.15 at 64, batch 4 2.70-2.72 against 2.66-2.67 ms.
constexpr int kMinSplitLenOneSequence = 32;
constexpr int kMinSplitLen = 64;
constexpr int kSplitAlign = 16;

constexpr int kPrefillRows = 32;  // query rows per block
constexpr int kPrefillKeys = 32;  // keys per tile (one per lane)
constexpr int kPrefillWarps = 4;
constexpr int kRowsPerWarp = kPrefillRows / kPrefillWarps;
constexpr int kPrefillThreads = kPrefillWarps * 32;

struct DecodeArgs {
  const uint16_t* k;
  const uint16_t* v;
  const int32_t* block_tables;  // [batch, max_pages_per_seq]
  int max_pages_per_seq;
  int page_shift;  // log2(page_size)
  int num_kv_heads;
  const void* q;  // [batch, num_heads, D]
  bool q_f16;
  void* out;  // [batch, num_heads, D]
  bool out_f16;
  const int32_t* seq_lens;  // [batch]
  int num_heads;
  int group;  // num_heads / num_kv_heads
  int head_chunks;
  int num_splits;
  int split_len;
  float scale;
  float softcap;
  int window;
  float* ws_acc;  // [batch, num_heads, num_splits, D]
  float* ws_ml;   // [batch, num_heads, num_splits, 2]: max, sum
};

// Asks L2 for the K and V rows of tokens [lo, hi) of sequence b's kv head, which earlier steps wrote;
// called before the wait for the kernels ahead (q/k/v, RoPE), on the tokens of the block's first
// kDecodePrefetchTokens past its first iteration (whose rows go straight into registers then), so
// that those DRAM reads overlap the kernels ahead instead of following them. At most 64 tokens, so that a launch of long single-split sequences (large
// batches) asks for no more than L2 keeps (64 tokens · 512 bytes per block at D = 128). L2 is where
// this step's new row is written, so a prefetched line is never stale; one 128-byte line per thread
// and step.
constexpr int kDecodePrefetchTokens = 64;

template <int D>
__device__ __forceinline__ void PrefetchRows(const DecodeArgs& a, int b, int kv_head, int lo, int hi) {
  constexpr int kLines = D * 2 / 128;  // 128-byte lines per K (or V) row of one kv head
  const int32_t* table = a.block_tables + int64_t{b} * a.max_pages_per_seq;
  for (int i = threadIdx.x; i < (hi - lo) * 2 * kLines; i += kDecodeThreads) {
    const int t = lo + i / (2 * kLines);
    const int line = i % (2 * kLines);
    const int64_t off = detail::KvOffset<D>(table, t, a.page_shift, a.num_kv_heads, kv_head) + (line % kLines) * 64;
    const uint16_t* row = (line < kLines ? a.k : a.v) + off;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row));
  }
}

template <int D, int H>
__global__ void __launch_bounds__(kDecodeThreads) PagedDecodeKernel(const DecodeArgs a) {
  constexpr int kLanesPerToken = D / 8;
  constexpr int kTokensPerWarp = 32 / kLanesPerToken;
  constexpr int kStreams = kDecodeWarps * kTokensPerWarp;
  constexpr int kUnroll = H >= 8 ? 2 : 4;
  __shared__ float s_m[kStreams][H];
  __shared__ float s_l[kStreams][H];
  __shared__ __align__(16) float s_acc[kStreams][H][D];
  detail::AllowDependentLaunch();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int sub = lane % kLanesPerToken;  // this lane's 8 dims: [8·sub, 8·sub + 8)
  const int stream = warp * kTokensPerWarp + lane / kLanesPerToken;
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / a.head_chunks;
  const int chunk = blockIdx.y % a.head_chunks;
  const int b = blockIdx.z;
  const int head0 = kv_head * a.group + chunk * H;
  const int heads = min(H, a.group - chunk * H);

  // The lengths and page table were copied in before the step (paged_attention.h), so the split's
  // range is known before the wait, and its first rows can be asked for.
  const int len = a.seq_lens[b];
  const int start = a.window > 0 ? max(0, len - a.window) : 0;
  const int lo = start + split * a.split_len;
  const int hi = min(len, lo + a.split_len);
  const int32_t* table = a.block_tables + int64_t{b} * a.max_pages_per_seq;

  // K/V rows of tokens [base, base + kStreams·kUnroll) below `limit`; the others read as zeros.
  uint4 kw[kUnroll], vw[kUnroll];
  bool ok[kUnroll];
  auto load_rows = [&](int base, int limit) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * kStreams + stream;
      ok[u] = t < hi;
      kw[u] = make_uint4(0, 0, 0, 0);
      vw[u] = kw[u];
      if (t < limit) {
        const int64_t off = detail::KvOffset<D>(table, t, a.page_shift, a.num_kv_heads, kv_head) + sub * 8;
        kw[u] = __ldg(reinterpret_cast<const uint4*>(a.k + off));
        vw[u] = __ldg(reinterpret_cast<const uint4*>(a.v + off));
      }
    }
  };
  // The first iteration's rows but the newest (this step's, written by the kernels ahead) are
  // loaded while those kernels run, and L2 is asked for the split's next rows.
  load_rows(lo, min(hi, len - 1));
  PrefetchRows<D>(a, b, kv_head, min(hi, lo + kStreams * kUnroll), min(hi, lo + kDecodePrefetchTokens));
  detail::WaitForPredecessorsAfter(kw[0].x);
  // The plan sizes splits for the longest sequence the launch allows (it is captured once per
  // graph bucket); splits past this sequence's length hold nothing and the combine skips them.
  if (a.num_splits > 1 && lo >= hi) return;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (lo + u * kStreams + stream == len - 1 && hi == len) {
      const int64_t off = detail::KvOffset<D>(table, len - 1, a.page_shift, a.num_kv_heads, kv_head) + sub * 8;
      kw[u] = __ldg(reinterpret_cast<const uint4*>(a.k + off));
      vw[u] = __ldg(reinterpret_cast<const uint4*>(a.v + off));
    }
  }

  float q[H][8];
#pragma unroll
  for (int h = 0; h < H; ++h) {
    if (h < heads) {
      detail::LoadFloat8(a.q, a.q_f16, (int64_t{b} * a.num_heads + head0 + h) * D + sub * 8, q[h]);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) q[h][i] = 0.0f;
    }
  }
  float m[H], l[H], acc[H][8];
#pragma unroll
  for (int h = 0; h < H; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;
  }

  // Block-uniform trip count: every lane takes part in the butterflies.
  for (int base = lo; base < hi; base += kStreams * kUnroll) {
    if (base != lo) load_rows(base, hi);
    float s[kUnroll][H];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      detail::Uint4ToFloat8(kw[u], kf);
#pragma unroll
      for (int h = 0; h < H; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(q[h][i], kf[i], dot);
        s[u][h] = dot;
      }
    }
#pragma unroll
    for (int o = kLanesPerToken / 2; o > 0; o >>= 1) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int h = 0; h < H; ++h) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], o);
      }
    }
    float vf[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) detail::Uint4ToFloat8(vw[u], vf[u]);
#pragma unroll
    for (int h = 0; h < H; ++h) {
      float mt = m[h];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        s[u][h] = ok[u] ? detail::TransformScore(s[u][h], a.scale, a.softcap) : -INFINITY;
        mt = fmaxf(mt, s[u][h]);
      }
      const float corr = ExpDiff(m[h], mt);
      l[h] *= corr;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= corr;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float p = ExpDiff(s[u][h], mt);
        l[h] += p;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[h][i] = fmaf(p, vf[u][i], acc[h][i]);
      }
      m[h] = mt;
    }
  }

  // Merge the streams.
#pragma unroll
  for (int h = 0; h < H; ++h) {
    if (sub == 0) {
      s_m[stream][h] = m[h];
      s_l[stream][h] = l[h];
    }
    float4* dst = reinterpret_cast<float4*>(&s_acc[stream][h][sub * 8]);
    dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < heads * D; idx += kDecodeThreads) {
    const int h = idx / D;
    const int d = idx % D;
    float mx = -INFINITY;
#pragma unroll
    for (int st = 0; st < kStreams; ++st) mx = fmaxf(mx, s_m[st][h]);
    float sum = 0.0f, val = 0.0f;
#pragma unroll
    for (int st = 0; st < kStreams; ++st) {
      const float w = ExpDiff(s_m[st][h], mx);
      sum = fmaf(w, s_l[st][h], sum);
      val = fmaf(w, s_acc[st][h][d], val);
    }
    const int64_t bh = int64_t{b} * a.num_heads + head0 + h;
    if (a.num_splits == 1) {
      detail::StoreFloat1(a.out, a.out_f16, bh * D + d, sum > 0.0f ? val / sum : 0.0f);
    } else {
      const int64_t row = bh * a.num_splits + split;
      a.ws_acc[row * D + d] = val;
      if (d == 0) {
        a.ws_ml[row * 2] = mx;
        a.ws_ml[row * 2 + 1] = sum;
      }
    }
  }
}

// Merges the splits of one (sequence, head): grid (num_heads, batch), D threads, thread = dim.
// Only the splits that hold tokens of this sequence exist (the others exited without writing).
// Right after the wait every load the merge needs goes out at once: each split's (m, l) (thread s
// takes split s) and the thread's accumulator values of the first kCombineHeld splits, into
// registers. So a batch-1 step at a few hundred tokens (21 splits) pays one L2 round trip instead
// of four (the (m, l), then the acc values eight splits at a time). The max is found with
// shuffles, and the weighted sums run in split order; splits past kCombineHeld are read in a loop.
constexpr int kCombineHeld = 32;

template <int D>
__global__ void __launch_bounds__(D) DecodeCombineKernel(const DecodeArgs a) {
  static_assert(D % 32 == 0, "one warp-max per full warp");
  __shared__ float weight[kDecodeMaxSplits];
  __shared__ float split_l[kDecodeMaxSplits];
  __shared__ float warp_max[D / 32];
  detail::AllowDependentLaunch();
  const int64_t bh = int64_t{blockIdx.y} * a.num_heads + blockIdx.x;
  const int64_t row0 = bh * a.num_splits;
  const int splits = detail::SplitsOfSequence(a.seq_lens[blockIdx.y], a.window, a.split_len, a.num_splits);
  detail::WaitForPredecessorsAfter(static_cast<uint32_t>(splits));  // seq_lens: valid at launch
  const float* ml = a.ws_ml + row0 * 2;
  const float* acc = a.ws_acc + row0 * D + threadIdx.x;
  float held[kCombineHeld];
#pragma unroll
  for (int s = 0; s < kCombineHeld; ++s) held[s] = s < splits ? acc[int64_t{s} * D] : 0.0f;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += D) {
    const float m = ml[s * 2];
    weight[s] = m;
    split_l[s] = ml[s * 2 + 1];
    mx = fmaxf(mx, m);
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
  }
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = mx;
  __syncthreads();
  mx = warp_max[0];
  for (int w = 1; w < D / 32; ++w) mx = fmaxf(mx, warp_max[w]);
  for (int s = threadIdx.x; s < splits; s += D) weight[s] = ExpDiff(weight[s], mx);
  __syncthreads();
  float sum = 0.0f, val = 0.0f;
  auto add_split = [&](int s, float split_acc) {
    sum = fmaf(weight[s], split_l[s], sum);
    val = fmaf(weight[s], split_acc, val);
  };
#pragma unroll
  for (int s = 0; s < kCombineHeld; ++s) {
    if (s < splits) add_split(s, held[s]);
  }
#pragma unroll 8
  for (int s = kCombineHeld; s < splits; ++s) add_split(s, acc[int64_t{s} * D]);
  detail::StoreFloat1(a.out, a.out_f16, bh * D + threadIdx.x, sum > 0.0f ? val / sum : 0.0f);
}

using detail::PrefillArgs;

template <int D>
constexpr size_t PrefillSharedBytes() {
  return sizeof(float) * kPrefillRows * D                               // Q
         + sizeof(uint32_t) * kPrefillKeys * (D / 2 + 1)                // K tile (padded)
         + sizeof(uint32_t) * kPrefillKeys * (D / 2)                    // V tile
         + sizeof(float) * kPrefillWarps * kPrefillKeys * kRowsPerWarp  // P
         + sizeof(int) * kPrefillRows * 2;                              // row sequence, position
}

template <int D>
__global__ void __launch_bounds__(kPrefillThreads) PagedPrefillKernel(const PrefillArgs a) {
  constexpr int kKStride = D / 2 + 1;  // words
  constexpr int kVStride = D / 2;      // words
  constexpr int kPairs = D / 64;       // dim pairs per lane
  extern __shared__ __align__(16) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem);
  uint32_t* k_s = reinterpret_cast<uint32_t*>(q_s + kPrefillRows * D);
  uint32_t* v_s = k_s + kPrefillKeys * kKStride;  // kPrefillKeys·kKStride is a multiple of 32
  float* p_all = reinterpret_cast<float*>(v_s + kPrefillKeys * kVStride);
  int* row_seq = reinterpret_cast<int*>(p_all + kPrefillWarps * kPrefillKeys * kRowsPerWarp);
  int* row_pos = row_seq + kPrefillRows;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int kv_head = blockIdx.y;
  const int64_t row_base = int64_t{blockIdx.x} * kPrefillRows;
  const int64_t total_rows = int64_t{a.num_tokens} * a.group;
  float* p_s = p_all + warp * kPrefillKeys * kRowsPerWarp;  // [key][row of the warp]

  if (tid < kPrefillRows) {
    const int64_t r = row_base + tid;
    const bool valid = r < total_rows;
    const int64_t token = valid ? r / a.group : 0;
    row_seq[tid] = valid ? a.token_seq[token] : -1;
    row_pos[tid] = valid ? a.token_pos[token] : -1;
  }
  for (int i = tid; i < kPrefillRows * (D / 4); i += kPrefillThreads) {
    const int r = i / (D / 4);
    const int c = (i % (D / 4)) * 4;
    const int64_t gr = row_base + r;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (gr < total_rows) {
      const int64_t token = gr / a.group;
      const int64_t head = int64_t{kv_head} * a.group + gr % a.group;
      x = detail::LoadFloat4(a.q, a.q_f16, (token * a.num_heads + head) * D + c);
    }
    *reinterpret_cast<float4*>(q_s + r * D + c) = x;
  }
  __syncthreads();

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][2 * kPairs];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < 2 * kPairs; ++i) acc[r][i] = 0.0f;
  }

  // Every thread derives the same passes from shared memory, so the control flow is block-uniform.
  uint32_t pending = 0;
  for (int r = 0; r < kPrefillRows; ++r) pending |= (row_seq[r] >= 0 ? 1u : 0u) << r;
  while (pending != 0) {
    const int seq = row_seq[__ffs(static_cast<int>(pending)) - 1];
    uint32_t active = 0;
    int key_lo = INT_MAX, key_hi = 0;    // the pass's key range, over all its rows
    int warp_lo = INT_MAX, warp_hi = 0;  // over this warp's rows of the pass
    for (int r = 0; r < kPrefillRows; ++r) {
      if (((pending >> r) & 1u) == 0 || row_seq[r] != seq) continue;
      active |= 1u << r;
      const int first = a.window > 0 ? max(0, row_pos[r] - a.window + 1) : 0;
      key_lo = min(key_lo, first);
      key_hi = max(key_hi, row_pos[r] + 1);
      if (r / kRowsPerWarp == warp) {
        warp_lo = min(warp_lo, first);
        warp_hi = max(warp_hi, row_pos[r] + 1);
      }
    }
    pending &= ~active;
    const int32_t* table = a.block_tables + int64_t{seq} * a.max_pages_per_seq;

    for (int k0 = key_lo; k0 < key_hi; k0 += kPrefillKeys) {
      __syncthreads();  // the previous tile's readers are done
      for (int i = tid; i < kPrefillKeys * (D / 8); i += kPrefillThreads) {
        const int j = i / (D / 8);
        const int c = (i % (D / 8)) * 8;
        const int t = k0 + j;
        // Zeros past the range: a masked key's p = 0 must meet a finite V.
        uint4 kq = make_uint4(0, 0, 0, 0), vq = kq;
        if (t < key_hi) {
          const int64_t off =
              detail::KvOffset<D>(table, t, a.page_shift, a.num_kv_heads, kv_head) + c;
          kq = __ldg(reinterpret_cast<const uint4*>(a.k + off));
          vq = __ldg(reinterpret_cast<const uint4*>(a.v + off));
        }
        uint32_t* kd = k_s + j * kKStride + c / 2;
        kd[0] = kq.x, kd[1] = kq.y, kd[2] = kq.z, kd[3] = kq.w;
        *reinterpret_cast<uint4*>(v_s + j * kVStride + c / 2) = vq;
      }
      __syncthreads();
      // Warp-uniform: skip tiles none of this warp's rows can see.
      if (warp_hi <= k0 || warp_lo >= k0 + kPrefillKeys) continue;

      const int t = k0 + lane;
      float s[kRowsPerWarp];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) s[r] = 0.0f;
      const uint32_t* krow = k_s + lane * kKStride;
      const float* qw = q_s + warp * kRowsPerWarp * D;
#pragma unroll 4
      for (int w = 0; w < D / 2; w += 2) {
        const float2 k01 = detail::HalfPairToFloat2(krow[w]);
        const float2 k23 = detail::HalfPairToFloat2(krow[w + 1]);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          const float4 qv = *reinterpret_cast<const float4*>(qw + r * D + 2 * w);
          s[r] = fmaf(qv.x, k01.x, s[r]);
          s[r] = fmaf(qv.y, k01.y, s[r]);
          s[r] = fmaf(qv.z, k23.x, s[r]);
          s[r] = fmaf(qv.w, k23.y, s[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        const int pos = row_pos[row];
        const bool visible =
            ((active >> row) & 1u) != 0 && t <= pos && (a.window == 0 || pos - t < a.window);
        const float sc = visible ? detail::TransformScore(s[r], a.scale, a.softcap) : -INFINITY;
        const float mt = fmaxf(m[r], detail::WarpMax(sc));
        const float corr = ExpDiff(m[r], mt);
        const float p = ExpDiff(sc, mt);
        l[r] = fmaf(l[r], corr, p);
#pragma unroll
        for (int i = 0; i < 2 * kPairs; ++i) acc[r][i] *= corr;
        m[r] = mt;
        p_s[lane * kRowsPerWarp + r] = p;
      }
      __syncwarp();
#pragma unroll 4
      for (int j = 0; j < kPrefillKeys; ++j) {
        const float4 p0 = *reinterpret_cast<const float4*>(p_s + j * kRowsPerWarp);
        const float4 p1 = *reinterpret_cast<const float4*>(p_s + j * kRowsPerWarp + 4);
        const float pr[kRowsPerWarp] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
#pragma unroll
        for (int i = 0; i < kPairs; ++i) {
          const float2 vv = detail::HalfPairToFloat2(v_s[j * kVStride + lane + 32 * i]);
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            acc[r][2 * i] = fmaf(pr[r], vv.x, acc[r][2 * i]);
            acc[r][2 * i + 1] = fmaf(pr[r], vv.y, acc[r][2 * i + 1]);
          }
        }
      }
      __syncwarp();  // p_s is rewritten by the next tile
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const float sum = detail::WarpSum(l[r]);
    const int64_t gr = row_base + warp * kRowsPerWarp + r;
    if (gr >= total_rows) continue;
    const int64_t token = gr / a.group;
    const int64_t head = int64_t{kv_head} * a.group + gr % a.group;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      detail::StoreFloat2(a.out, a.out_f16, (token * a.num_heads + head) * D + 2 * (lane + 32 * i),
                          acc[r][2 * i] * inv, acc[r][2 * i + 1] * inv);
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool IsPowerOfTwo(int v) { return v > 0 && (v & (v - 1)) == 0; }

int Log2(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

absl::Status ValidateCache(const PagedKvCache& c, const char* who) {
  auto bad = [who](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", parts...));
  };
  if (c.head_dim != 64 && c.head_dim != 128 && c.head_dim != 256)
    return bad("head_dim ", c.head_dim, " not 64, 128 or 256");
  if (!IsPowerOfTwo(c.page_size) || c.page_size > (1 << 20))
    return bad("page_size ", c.page_size, " must be a power of two");
  if (c.num_kv_heads < 1) return bad("num_kv_heads ", c.num_kv_heads, " must be positive");
  if (c.max_pages_per_seq < 1)
    return bad("max_pages_per_seq ", c.max_pages_per_seq, " must be positive");
  if (c.k == nullptr || c.v == nullptr || c.block_tables == nullptr)
    return bad("cache k, v and block_tables must be non-null");
  if (!Aligned16(c.k) || !Aligned16(c.v)) return bad("cache k and v must be 16-byte aligned");
  return absl::OkStatus();
}

absl::Status ValidateCommon(const PagedKvCache& c, int num_heads, const void* q, const void* out,
                            float scale, float softcap, int window, const char* who) {
  auto bad = [who](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", parts...));
  };
  if (absl::Status s = ValidateCache(c, who); !s.ok()) return s;
  if (num_heads < 1 || num_heads % c.num_kv_heads != 0)
    return bad("num_heads ", num_heads, " must be a positive multiple of num_kv_heads ",
               c.num_kv_heads);
  if (q == nullptr || out == nullptr) return bad("q and out must be non-null");
  if (!Aligned16(q) || !Aligned16(out)) return bad("q and out must be 16-byte aligned");
  if (!std::isfinite(scale)) return bad("scale must be finite");
  if (!(softcap >= 0.0f) || !std::isfinite(softcap)) return bad("logit_softcap must be >= 0");
  if (window < 0) return bad("sliding_window ", window, " must be >= 0");
  return absl::OkStatus();
}

absl::Status ValidateDecode(const PagedDecodeAttentionParams& p) {
  constexpr const char* kWho = "LaunchPagedDecodeAttention";
  auto bad = [](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(kWho, ": ", parts...));
  };
  if (absl::Status s = ValidateCommon(p.cache, p.num_heads, p.q, p.out, p.scale, p.logit_softcap,
                                      p.sliding_window, kWho);
      !s.ok())
    return s;
  if (p.batch < 1 || p.batch > kDecodeMaxBatch)
    return bad("batch ", p.batch, " outside [1, ", kDecodeMaxBatch, "]");
  if (p.seq_lens == nullptr) return bad("seq_lens must be non-null");
  const int64_t capacity = int64_t{p.cache.max_pages_per_seq} * p.cache.page_size;
  if (p.max_seq_len < 1 || p.max_seq_len > capacity)
    return bad("max_seq_len ", p.max_seq_len,
               " outside [1, max_pages_per_seq·page_size = ", capacity, "]");
  const DecodeAttentionPlan plan = PlanDecodeAttention(p);
  if (int64_t{p.cache.num_kv_heads} * plan.head_chunks > 65535)
    return bad("num_kv_heads·head_chunks exceeds the grid limit 65535");
  const size_t need = DecodeAttentionWorkspaceBytes(p);
  if (need > 0 && (p.workspace == nullptr || p.workspace_bytes < need || !Aligned16(p.workspace)))
    return bad("workspace needs ", need, " bytes, 16-byte aligned (have ", p.workspace_bytes, ")");
  return absl::OkStatus();
}

absl::Status ValidatePrefill(const PagedPrefillAttentionParams& p) {
  constexpr const char* kWho = "LaunchPagedPrefillAttention";
  auto bad = [](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(kWho, ": ", parts...));
  };
  if (absl::Status s = ValidateCommon(p.cache, p.num_heads, p.q, p.out, p.scale, p.logit_softcap,
                                      p.sliding_window, kWho);
      !s.ok())
    return s;
  if (p.num_tokens < 0) return bad("num_tokens ", p.num_tokens, " must be >= 0");
  if (p.token_seq == nullptr || p.token_pos == nullptr)
    return bad("token_seq and token_pos must be non-null");
  const int64_t blocks =
      (int64_t{p.num_tokens} * (p.num_heads / p.cache.num_kv_heads) + kPrefillRows - 1) /
      kPrefillRows;
  if (blocks > INT_MAX) return bad("num_tokens·group too large for one launch");
  const int64_t mma_blocks =
      (int64_t{p.num_tokens} * (p.num_heads / p.cache.num_kv_heads) + detail::kMmaRows - 1) /
      detail::kMmaRows * p.cache.num_kv_heads;
  if (mma_blocks > INT_MAX) return bad("num_tokens·num_heads too large for one launch");
  if (p.cache.num_kv_heads > 65535) return bad("num_kv_heads exceeds the grid limit 65535");
  return absl::OkStatus();
}

// The fields the decode and prefill kernels' arguments share: the cache, q and out, the heads and
// the score options.
template <typename Args, typename Params>
Args MakeCommonArgs(const Params& p) {
  Args a{};
  a.k = p.cache.k;
  a.v = p.cache.v;
  a.block_tables = p.cache.block_tables;
  a.max_pages_per_seq = p.cache.max_pages_per_seq;
  a.page_shift = Log2(p.cache.page_size);
  a.num_kv_heads = p.cache.num_kv_heads;
  a.q = p.q;
  a.q_f16 = p.q_type == ActivationType::kF16;
  a.out = p.out;
  a.out_f16 = p.out_type == ActivationType::kF16;
  a.num_heads = p.num_heads;
  a.group = p.num_heads / p.cache.num_kv_heads;
  a.scale = p.scale;
  a.softcap = p.logit_softcap;
  a.window = p.sliding_window;
  return a;
}

DecodeArgs MakeDecodeArgs(const PagedDecodeAttentionParams& p, const DecodeAttentionPlan& plan) {
  DecodeArgs a = MakeCommonArgs<DecodeArgs>(p);
  a.seq_lens = p.seq_lens;
  a.head_chunks = plan.head_chunks;
  a.num_splits = plan.num_splits;
  a.split_len = plan.split_len;
  if (plan.num_splits > 1) {
    const int64_t rows = int64_t{p.batch} * p.num_heads * plan.num_splits;
    a.ws_acc = static_cast<float*>(p.workspace);
    a.ws_ml = a.ws_acc + rows * p.cache.head_dim;
  }
  return a;
}

template <int D>
absl::Status LaunchDecodeDim(const PagedDecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                             cudaStream_t stream) {
  const DecodeArgs a = MakeDecodeArgs(p, plan);
  const dim3 grid(static_cast<unsigned>(plan.num_splits),
                  static_cast<unsigned>(p.cache.num_kv_heads * plan.head_chunks),
                  static_cast<unsigned>(p.batch));
  auto* kernel = plan.heads_per_block == 1   ? PagedDecodeKernel<D, 1>
                 : plan.heads_per_block == 2 ? PagedDecodeKernel<D, 2>
                 : plan.heads_per_block == 4 ? PagedDecodeKernel<D, 4>
                                             : PagedDecodeKernel<D, 8>;
  if (absl::Status s = detail::LaunchKernel({grid, dim3(kDecodeThreads)}, stream, kernel, a);
      !s.ok()) {
    return s;
  }
  if (plan.num_splits == 1 || p.defer_combine) return absl::OkStatus();
  const dim3 cgrid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  return detail::LaunchKernel({cgrid, dim3(D)}, stream, DecodeCombineKernel<D>, a);
}

PrefillArgs MakePrefillArgs(const PagedPrefillAttentionParams& p) {
  PrefillArgs a = MakeCommonArgs<PrefillArgs>(p);
  a.token_seq = p.token_seq;
  a.token_pos = p.token_pos;
  a.num_tokens = p.num_tokens;
  a.row_tiles =
      static_cast<int>((int64_t{p.num_tokens} * a.group + detail::kMmaRows - 1) / detail::kMmaRows);
  return a;
}

// Above the 48 KB default a kernel must opt in (not a stream operation: capture-safe).
template <typename Kernel>
absl::Status AllowSharedBytes(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
  return absl::OkStatus();
}

// The fp32 FMA kernel (params.exact_fp32).
template <int D>
absl::Status LaunchPrefillDim(const PagedPrefillAttentionParams& p, cudaStream_t stream) {
  const PrefillArgs a = MakePrefillArgs(p);
  constexpr size_t kSmem = PrefillSharedBytes<D>();
  if (absl::Status s = AllowSharedBytes(PagedPrefillKernel<D>, kSmem); !s.ok()) return s;
  const int64_t rows = int64_t{p.num_tokens} * a.group;
  const dim3 grid(static_cast<unsigned>((rows + kPrefillRows - 1) / kPrefillRows),
                  static_cast<unsigned>(p.cache.num_kv_heads));
  PagedPrefillKernel<D><<<grid, kPrefillThreads, kSmem, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// The tensor-core kernel (default): one block per (64-row tile, kv head), 1-D grid.
template <int D>
absl::Status LaunchPrefillMmaDim(const PagedPrefillAttentionParams& p, cudaStream_t stream) {
  const PrefillArgs a = MakePrefillArgs(p);
  constexpr size_t kSmem = detail::MmaPrefillShape<D>::kSharedBytes;
  if (absl::Status s = AllowSharedBytes(detail::PagedPrefillMmaKernel<D>, kSmem); !s.ok()) return s;
  const unsigned blocks = static_cast<unsigned>(int64_t{a.row_tiles} * p.cache.num_kv_heads);
  detail::PagedPrefillMmaKernel<D><<<blocks, detail::kMmaThreads, kSmem, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

DecodeAttentionPlan PlanDecodeAttention(const PagedDecodeAttentionParams& p) {
  DecodeAttentionPlan plan;
  const int kv_heads = std::max(p.cache.num_kv_heads, 1);
  const int group = std::max(p.num_heads / kv_heads, 1);
  plan.heads_per_block = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
  plan.head_chunks = (group + plan.heads_per_block - 1) / plan.heads_per_block;
  int64_t range = std::max(p.max_seq_len, 1);
  if (p.sliding_window > 0) range = std::min<int64_t>(range, p.sliding_window);
  const int64_t blocks_per_split =
      std::max<int64_t>(int64_t{std::max(p.batch, 1)} * kv_heads * plan.head_chunks, 1);
  const int64_t want = (kTargetBlocks + blocks_per_split - 1) / blocks_per_split;
  const int64_t min_len = p.batch <= 1 ? kMinSplitLenOneSequence : kMinSplitLen;
  const int64_t by_len = (range + min_len - 1) / min_len;
  const int64_t splits = std::clamp<int64_t>(std::min(want, by_len), 1, kDecodeMaxSplits);
  const int64_t len = ((range + splits - 1) / splits + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  plan.split_len = static_cast<int>(len);
  plan.num_splits = static_cast<int>((range + len - 1) / len);
  return plan;
}

size_t DecodeAttentionWorkspaceBytes(const PagedDecodeAttentionParams& p) {
  const DecodeAttentionPlan plan = PlanDecodeAttention(p);
  if (plan.num_splits <= 1) return 0;
  return static_cast<size_t>(std::max(p.batch, 0)) * static_cast<size_t>(std::max(p.num_heads, 0)) *
         static_cast<size_t>(plan.num_splits) *
         static_cast<size_t>(std::max(p.cache.head_dim, 0) + 2) * sizeof(float);
}

DecodeAttentionSplits DeferredDecodeSplits(const PagedDecodeAttentionParams& p) {
  const DecodeAttentionPlan plan = PlanDecodeAttention(p);
  DecodeAttentionSplits s;
  if (plan.num_splits <= 1) return s;
  const DecodeArgs a = MakeDecodeArgs(p, plan);
  s.acc = a.ws_acc;
  s.ml = a.ws_ml;
  s.seq_lens = p.seq_lens;
  s.num_heads = p.num_heads;
  s.head_dim = p.cache.head_dim;
  s.num_splits = plan.num_splits;
  s.split_len = plan.split_len;
  s.window = p.sliding_window;
  return s;
}

bool IsSupported(int sm, const PagedDecodeAttentionParams& params) {
  return sm >= 80 && ValidateDecode(params).ok();
}

absl::Status LaunchPagedDecodeAttention(const PagedDecodeAttentionParams& params,
                                        cudaStream_t stream) {
  if (absl::Status s = ValidateDecode(params); !s.ok()) return s;
  const DecodeAttentionPlan plan = PlanDecodeAttention(params);
  switch (params.cache.head_dim) {
    case 64:
      return LaunchDecodeDim<64>(params, plan, stream);
    case 128:
      return LaunchDecodeDim<128>(params, plan, stream);
    default:
      return LaunchDecodeDim<256>(params, plan, stream);
  }
}

bool IsSupported(int sm, const PagedPrefillAttentionParams& params) {
  return sm >= 80 && ValidatePrefill(params).ok();
}

absl::Status LaunchPagedPrefillAttention(const PagedPrefillAttentionParams& params,
                                         cudaStream_t stream) {
  if (absl::Status s = ValidatePrefill(params); !s.ok()) return s;
  if (params.num_tokens == 0) return absl::OkStatus();
  if (params.exact_fp32) {
    switch (params.cache.head_dim) {
      case 64:
        return LaunchPrefillDim<64>(params, stream);
      case 128:
        return LaunchPrefillDim<128>(params, stream);
      default:
        return LaunchPrefillDim<256>(params, stream);
    }
  }
  switch (params.cache.head_dim) {
    case 64:
      return LaunchPrefillMmaDim<64>(params, stream);
    case 128:
      return LaunchPrefillMmaDim<128>(params, stream);
    default:
      return LaunchPrefillMmaDim<256>(params, stream);
  }
}

}  // namespace bitloom::kernels::cuda
