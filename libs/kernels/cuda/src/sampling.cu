// Next-token sampling on the GPU (see sampling.h for the semantics).
//
// Layout. A row of V logits is cut into chunks of kChunk = 2048 entries; "chunk kernels" run a grid
// (chunks, batch) of 256 threads (8 entries per thread) and leave one partial per chunk, "row
// kernels" run one 256-thread block per row over those partials. Every sum is a fixed tree (no
// atomics), so results are deterministic. The sequence, all on `stream`:
//   K1 Penalize  (chunk): penalised logits -> workspace; per-chunk argmax (value, lowest id); the sort
//                keys (row << 32 | descending-order bits of the logit) and ids.
//   K2 ArgMax    (row):   the row's max logit and argmax; greedy rows write their token here.
//   -- greedy_only stops here --
//   CUB radix sort of (key, id) pairs over the whole batch at once (bits [0, 32 + log2 batch)): one
//                stable sort orders every row by descending logit with ties by ascending id, the
//                CPU's order (a segmented sort would give each 262144-entry row one thread block).
//   K3 SortedExp (chunk): e_j = exp(l_j / T − max / T) in sorted order, double; per-chunk Σe.
//   K4 SortedProb(chunk): z = Σe (every block reduces the chunk sums the same way), p_j = e_j / z;
//                per-chunk Σp.
//   K5 Select    (row):   keep = min(top_k, V); top_p: the first n whose sorted prefix mass reaches
//                top_p · mass(keep), searched over the chunk sums and then inside one chunk; min_p:
//                the sorted prefix with p ≥ min_p · p_0 (a block-parallel 256-ary search, p being
//                non-increasing in sorted order). All three keep a *prefix* of the sorted order, so
//                the survivors are exactly the ids ranked before the cut (cut logit, cut id), and
//                mass = Σ of that prefix.
//   K6 DrawSums  (chunk): in id order, q_i = p_i / mass for survivors (ranked ≤ the cut) and 0
//                otherwise; per-chunk Σq and the last id with q > 0.
//   K7 Draw      (row):   the first chunk whose running Σq exceeds u, then the first id inside it
//                (q recomputed, same arithmetic); the last nonzero id if u is never exceeded.
// Rounding: the double arithmetic of each element is the CPU's (x = l·(1/T), exp(x − max), / z,
// / mass) with explicit __d*_rn so nothing is contracted; only the summation order differs.

#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/sampling.h"
#include "block_reduce.cuh"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;
constexpr int kChunk = kThreads * kItems;  // 2048 entries per chunk and per scan tile
constexpr size_t kAlign = 256;

// Per-row results handed from one kernel to the next.
struct RowState {
  float max_logit;  // K2
  int32_t argmax;   // K2
  float cut_logit;  // K5: the last survivor in sorted order...
  int32_t cut_id;   // ...and its id
  double z;         // K4: Σ exp(x − max)
  double mass;      // K5: Σ p over the survivors
};

// The workspace, carved in a fixed order; every section 256-byte aligned.
struct Workspace {
  float* penalised;        // [B, V]
  uint64_t* keys_in;       // [B·V]
  uint64_t* keys_out;      // [B·V]
  int32_t* ids_in;         // [B·V]
  int32_t* ids_out;        // [B·V]: per row, ids by descending logit
  double* prob;            // [B, V]: e, then p, in sorted order
  float* chunk_max;        // [B, C]
  int32_t* chunk_argmax;   // [B, C]
  double* chunk_esum;      // [B, C]
  double* chunk_psum;      // [B, C]
  double* chunk_qsum;      // [B, C]
  int32_t* chunk_last_nz;  // [B, C]
  RowState* rows;          // [B]
  void* sort_temp;
  size_t sort_temp_bytes;
  size_t total_bytes;
};

size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int64_t NumChunks(int64_t vocab) { return (vocab + kChunk - 1) / kChunk; }

int RowBits(int batch) {
  int bits = 0;
  while ((1 << bits) < batch) ++bits;
  return bits;
}

// Lays the sections out from `base` (null: only sizes). sort_temp_bytes must be set.
void Carve(char* base, int batch, int64_t vocab, Workspace* w) {
  const size_t n = static_cast<size_t>(batch) * static_cast<size_t>(vocab);
  const size_t c = static_cast<size_t>(batch) * static_cast<size_t>(NumChunks(vocab));
  size_t off = 0;
  auto take = [&](size_t bytes) {
    void* p = base == nullptr ? nullptr : base + off;
    off += AlignUp(bytes);
    return p;
  };
  w->penalised = static_cast<float*>(take(n * 4));
  w->keys_in = static_cast<uint64_t*>(take(n * 8));
  w->keys_out = static_cast<uint64_t*>(take(n * 8));
  w->ids_in = static_cast<int32_t*>(take(n * 4));
  w->ids_out = static_cast<int32_t*>(take(n * 4));
  w->prob = static_cast<double*>(take(n * 8));
  w->chunk_max = static_cast<float*>(take(c * 4));
  w->chunk_argmax = static_cast<int32_t*>(take(c * 4));
  w->chunk_esum = static_cast<double*>(take(c * 8));
  w->chunk_psum = static_cast<double*>(take(c * 8));
  w->chunk_qsum = static_cast<double*>(take(c * 8));
  w->chunk_last_nz = static_cast<int32_t*>(take(c * 4));
  w->rows = static_cast<RowState*>(take(static_cast<size_t>(batch) * sizeof(RowState)));
  w->sort_temp = take(w->sort_temp_bytes);
  w->total_bytes = off;
}

absl::Status SortTempBytes(int batch, int64_t vocab, size_t* bytes) {
  *bytes = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, *bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(batch * vocab), 0, 32 + RowBits(batch)));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Device helpers

// Everything the kernels read, by value.
struct Args {
  SamplingParams p;
  Workspace w;
  int64_t chunks;
};

__device__ __forceinline__ bool Better(float v, int32_t i, float best_v, int32_t best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

// The block's (max value, lowest id among the maxima); every thread gets it.
__device__ void BlockArgMax(float& v, int32_t& id) {
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, id, offset);
    if (Better(ov, oi, v, id)) v = ov, id = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sv[warp] = v, si[warp] = id;
  __syncthreads();
  v = lane < kThreads / 32 ? sv[lane] : -INFINITY;
  id = lane < kThreads / 32 ? si[lane] : INT32_MAX;
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, id, offset);
    if (Better(ov, oi, v, id)) v = ov, id = oi;
  }
}

__device__ int32_t BlockMaxInt(int32_t v) {
  __shared__ int32_t s[32];
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? s[lane] : INT32_MIN;
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Ascending-sortable bits of a float with −0 folded onto +0 (they compare equal, so they must tie
// and fall back to the id order), inverted for descending order.
__device__ __forceinline__ uint32_t DescendingBits(float l) {
  uint32_t u = __float_as_uint(l);
  if (u == 0x80000000u) u = 0;
  const uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~asc;
}

__device__ __forceinline__ double InvTemperature(float t) { return 1.0 / static_cast<double>(t); }

// exp(l·(1/T) − max·(1/T)), the CPU's expression; max·(1/T) is the CPU's max over l·(1/T) because
// multiplying by a positive double is monotone.
__device__ __forceinline__ double ExpShifted(float l, float max_logit, double inv_t) {
  return exp(__dsub_rn(__dmul_rn(static_cast<double>(l), inv_t),
                       __dmul_rn(static_cast<double>(max_logit), inv_t)));
}

// Σ load(i) for i in [begin, end), as a fixed tree; every thread gets it.
template <typename Load>
__device__ double BlockRangeSum(Load load, int64_t begin, int64_t end) {
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) s += load(i);
  return detail::BlockSum(s);
}

struct Crossing {
  int index;      // the first index whose running sum reaches the target; n when none does
  double before;  // the running sum before it
};

// Running sums s_i = carry + load(0) + ... + load(i) over i in [0, n), tile by tile; finds the first
// i with s_i ≥ target (kStrict: s_i > target). Every thread gets the answer.
template <bool kStrict, typename Load>
__device__ Crossing BlockFindCrossing(Load load, int n, double carry, double target) {
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int found;
  __shared__ double found_before;
  for (int base = 0; base < n; base += kChunk) {
    double v[kItems];
    double local = 0.0;
    const int first = base + threadIdx.x * kItems;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      v[k] = first + k < n ? load(first + k) : 0.0;
      local += v[k];
    }
    double excl, tile_total;
    Scan(scan_storage).ExclusiveSum(local, excl, tile_total);
    if (threadIdx.x == 0) found = INT32_MAX;
    __syncthreads();
    double run = carry + excl;
    int mine = INT32_MAX;
    double mine_before = 0.0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const double next = run + v[k];
      const bool hit = kStrict ? next > target : next >= target;
      if (mine == INT32_MAX && first + k < n && hit) mine = first + k, mine_before = run;
      run = next;
    }
    if (mine != INT32_MAX) atomicMin(&found, mine);
    __syncthreads();
    if (mine != INT32_MAX && mine == found) found_before = mine_before;
    __syncthreads();
    const int f = found;
    const double fb = found_before;
    __syncthreads();  // scan_storage and found are reused by the next tile / call
    if (f != INT32_MAX) return {f, fb};
    carry += tile_total;
  }
  return {n, carry};
}

// ---------------------------------------------------------------------------------------------
// Kernels

__global__ void __launch_bounds__(kThreads) PenalizeKernel(Args a) {
  const SamplingParams& p = a.p;
  const int b = blockIdx.y;
  const int64_t V = p.vocab;
  const SamplingRowParams r = p.rows[b];
  const float* logits = p.logits + b * p.logits_stride;
  const int32_t* pc = p.prompt_counts != nullptr ? p.prompt_counts + b * V : nullptr;
  const int32_t* oc = p.output_counts != nullptr ? p.output_counts + b * V : nullptr;
  const bool rep_on = r.repetition_penalty != 0.0f && r.repetition_penalty != 1.0f;
  const bool additive_on = r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f;
  float best = -INFINITY;
  int32_t best_id = INT32_MAX;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < V ? begin + kChunk : V;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    float l = logits[i];
    const int32_t out_count = oc != nullptr ? oc[i] : 0;
    if (rep_on && (out_count > 0 || (pc != nullptr && pc[i] > 0))) {
      l = l > 0.0f ? __fdiv_rn(l, r.repetition_penalty) : __fmul_rn(l, r.repetition_penalty);
    }
    if (additive_on && out_count > 0) {
      l = __fsub_rn(l, __fadd_rn(r.presence_penalty,
                                 __fmul_rn(r.frequency_penalty, static_cast<float>(out_count))));
    }
    const int32_t id = static_cast<int32_t>(i);
    a.w.penalised[b * V + i] = l;
    if (!p.greedy_only) {
      a.w.keys_in[b * V + i] = (static_cast<uint64_t>(b) << 32) | DescendingBits(l);
      a.w.ids_in[b * V + i] = id;
    }
    if (Better(l, id, best, best_id)) best = l, best_id = id;
  }
  BlockArgMax(best, best_id);
  if (threadIdx.x == 0) {
    a.w.chunk_max[b * a.chunks + blockIdx.x] = best;
    a.w.chunk_argmax[b * a.chunks + blockIdx.x] = best_id;
  }
}

__global__ void __launch_bounds__(kThreads) ArgMaxKernel(Args a) {
  const int b = blockIdx.x;
  float best = -INFINITY;
  int32_t best_id = INT32_MAX;
  for (int64_t c = threadIdx.x; c < a.chunks; c += kThreads) {
    const float v = a.w.chunk_max[b * a.chunks + c];
    const int32_t id = a.w.chunk_argmax[b * a.chunks + c];
    if (Better(v, id, best, best_id)) best = v, best_id = id;
  }
  BlockArgMax(best, best_id);
  if (threadIdx.x == 0) {
    a.w.rows[b].max_logit = best;
    a.w.rows[b].argmax = best_id;
    if (a.p.greedy_only || a.p.rows[b].temperature == 0.0f) a.p.tokens[b] = best_id;
  }
}

__global__ void __launch_bounds__(kThreads) SortedExpKernel(Args a) {
  const int b = blockIdx.y;
  const float t = a.p.rows[b].temperature;
  if (t == 0.0f) return;
  const int64_t V = a.p.vocab;
  const double inv_t = InvTemperature(t);
  const float max_logit = a.w.rows[b].max_logit;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < V ? begin + kChunk : V;
  double s = 0.0;
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
    const int32_t id = a.w.ids_out[b * V + j];
    const double e = ExpShifted(a.w.penalised[b * V + id], max_logit, inv_t);
    a.w.prob[b * V + j] = e;
    s += e;
  }
  s = detail::BlockSum(s);
  if (threadIdx.x == 0) a.w.chunk_esum[b * a.chunks + blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads) SortedProbKernel(Args a) {
  const int b = blockIdx.y;
  if (a.p.rows[b].temperature == 0.0f) return;
  const int64_t V = a.p.vocab;
  const double* esum = a.w.chunk_esum + b * a.chunks;
  const double z = BlockRangeSum([&](int64_t c) { return esum[c]; }, 0, a.chunks);
  if (blockIdx.x == 0 && threadIdx.x == 0) a.w.rows[b].z = z;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < V ? begin + kChunk : V;
  double s = 0.0;
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
    const double prob = __ddiv_rn(a.w.prob[b * V + j], z);
    a.w.prob[b * V + j] = prob;
    s += prob;
  }
  s = detail::BlockSum(s);
  if (threadIdx.x == 0) a.w.chunk_psum[b * a.chunks + blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads) SelectKernel(Args a) {
  const int b = blockIdx.x;
  const SamplingRowParams r = a.p.rows[b];
  if (r.temperature == 0.0f) return;
  const int64_t V = a.p.vocab;
  const double* prob = a.w.prob + b * V;
  const double* psum = a.w.chunk_psum + b * a.chunks;
  // Σ p over the sorted prefix [0, n): whole chunks, then the partial chunk.
  auto prefix_mass = [&](int64_t n) {
    const int64_t full = n / kChunk;
    const double chunks_mass = BlockRangeSum([&](int64_t c) { return psum[c]; }, 0, full);
    const double tail = BlockRangeSum([&](int64_t j) { return prob[j]; }, full * kChunk, n);
    return chunks_mass + tail;
  };

  int64_t keep = V;
  if (r.top_k > 0 && r.top_k < V) keep = r.top_k;
  if (r.top_p > 0.0f && r.top_p < 1.0f) {
    const double target = static_cast<double>(r.top_p) * prefix_mass(keep);
    // The smallest n with Σ_{j<n} p_j ≥ target: the chunk where the running sum gets there, then
    // the entry inside it.
    const int keep_chunks = static_cast<int>((keep + kChunk - 1) / kChunk);
    const Crossing chunk =
        BlockFindCrossing<false>([&](int c) { return psum[c]; }, keep_chunks, 0.0, target);
    int64_t n = keep;
    if (chunk.index < keep_chunks) {
      const int64_t base = static_cast<int64_t>(chunk.index) * kChunk;
      const int len = static_cast<int>(V - base < kChunk ? V - base : kChunk);
      const Crossing entry = BlockFindCrossing<false>([&](int j) { return prob[base + j]; }, len,
                                                      chunk.before, target);
      n = base + (entry.index < len ? entry.index + 1 : len);
    }
    keep = n < keep ? n : keep;
    if (keep < 1) keep = 1;
  }
  if (r.min_p > 0.0f) {
    // Survivors p_j ≥ min_p · p_0 form a sorted prefix; find its length m (a 256-ary search: the
    // answer is in [lo, hi]; each round probes 256 evenly spaced entries).
    const double threshold = static_cast<double>(r.min_p) * prob[0];
    __shared__ int64_t first_false;
    int64_t lo = 0, hi = keep;
    while (lo < hi) {
      const int64_t step = (hi - lo + kThreads - 1) / kThreads;
      if (threadIdx.x == 0) first_false = INT64_MAX;
      __syncthreads();
      const int64_t q = lo + threadIdx.x * step;
      if (q < hi && prob[q] < threshold) atomicMin(reinterpret_cast<unsigned long long*>(&first_false), static_cast<unsigned long long>(q));
      __syncthreads();
      const int64_t f = first_false;
      __syncthreads();
      if (f == INT64_MAX) {
        const int64_t last_probe = lo + ((hi - 1 - lo) / step) * step;
        lo = last_probe + 1;
      } else {
        hi = f;
        lo = f == lo ? lo : f - step + 1;
      }
    }
    keep = lo < 1 ? 1 : lo;
  }
  const double mass = prefix_mass(keep);
  if (threadIdx.x == 0) {
    const int32_t cut_id = a.w.ids_out[b * V + keep - 1];
    a.w.rows[b].cut_id = cut_id;
    a.w.rows[b].cut_logit = a.w.penalised[b * V + cut_id];
    a.w.rows[b].mass = mass;
  }
}

// q_i of the draw, in id order: p_i / mass for the ids ranked at or before the cut, else 0.
__device__ __forceinline__ double DrawProb(float l, int32_t id, const RowState& s, double inv_t) {
  const bool survives = l > s.cut_logit || (l == s.cut_logit && id <= s.cut_id);
  if (!survives) return 0.0;
  return __ddiv_rn(__ddiv_rn(ExpShifted(l, s.max_logit, inv_t), s.z), s.mass);
}

__global__ void __launch_bounds__(kThreads) DrawSumsKernel(Args a) {
  const int b = blockIdx.y;
  const float t = a.p.rows[b].temperature;
  if (t == 0.0f) return;
  const int64_t V = a.p.vocab;
  const double inv_t = InvTemperature(t);
  const RowState s = a.w.rows[b];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < V ? begin + kChunk : V;
  double sum = 0.0;
  int32_t last_nz = -1;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double q = DrawProb(a.w.penalised[b * V + i], static_cast<int32_t>(i), s, inv_t);
    sum += q;
    if (q > 0.0) last_nz = static_cast<int32_t>(i);
  }
  sum = detail::BlockSum(sum);
  last_nz = BlockMaxInt(last_nz);
  if (threadIdx.x == 0) {
    a.w.chunk_qsum[b * a.chunks + blockIdx.x] = sum;
    a.w.chunk_last_nz[b * a.chunks + blockIdx.x] = last_nz;
  }
}

__global__ void __launch_bounds__(kThreads) DrawKernel(Args a) {
  const int b = blockIdx.x;
  const float t = a.p.rows[b].temperature;
  if (t == 0.0f) return;
  const int64_t V = a.p.vocab;
  const double inv_t = InvTemperature(t);
  const RowState s = a.w.rows[b];
  const double u = a.p.uniforms[b];
  const double* qsum = a.w.chunk_qsum + b * a.chunks;
  const int32_t* last_nz = a.w.chunk_last_nz + b * a.chunks;
  const int chunks = static_cast<int>(a.chunks);
  const Crossing chunk = BlockFindCrossing<true>([&](int c) { return qsum[c]; }, chunks, 0.0, u);
  int32_t token;
  if (chunk.index < chunks) {
    const int64_t base = static_cast<int64_t>(chunk.index) * kChunk;
    const int len = static_cast<int>(V - base < kChunk ? V - base : kChunk);
    const float* logits = a.w.penalised + b * V + base;
    const Crossing entry = BlockFindCrossing<true>(
        [&](int j) { return DrawProb(logits[j], static_cast<int32_t>(base + j), s, inv_t); }, len,
        chunk.before, u);
    // Summed entry by entry the chunk may fall a rounding short of its chunk sum: its last survivor.
    token = entry.index < len ? static_cast<int32_t>(base + entry.index) : last_nz[chunk.index];
  } else {
    int32_t last = -1;
    for (int c = threadIdx.x; c < chunks; c += kThreads) last = max(last, last_nz[c]);
    token = BlockMaxInt(last);
  }
  if (threadIdx.x == 0) a.p.tokens[b] = token < 0 ? s.argmax : token;
}

absl::Status ValidateShape(int batch, int64_t vocab) {
  if (batch < 1 || batch > kMaxSamplingBatch || vocab < 1 || vocab > kMaxSamplingVocab ||
      static_cast<int64_t>(batch) * vocab > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling: batch ", batch, " x vocab ", vocab, " outside batch [1, ", kMaxSamplingBatch,
        "], vocab [1, ", kMaxSamplingVocab, "], batch·vocab < 2^31"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<size_t> SamplingWorkspaceBytes(int batch, int64_t vocab) {
  if (absl::Status s = ValidateShape(batch, vocab); !s.ok()) return s;
  Workspace w{};
  if (absl::Status s = SortTempBytes(batch, vocab, &w.sort_temp_bytes); !s.ok()) return s;
  Carve(nullptr, batch, vocab, &w);
  return w.total_bytes;
}

absl::Status LaunchSampling(const SamplingParams& p, cudaStream_t stream) {
  if (absl::Status s = ValidateShape(p.batch, p.vocab); !s.ok()) return s;
  if (p.logits == nullptr || p.rows == nullptr || p.tokens == nullptr || p.workspace == nullptr ||
      (!p.greedy_only && p.uniforms == nullptr)) {
    return absl::InvalidArgumentError(
        "LaunchSampling: logits, rows, tokens, workspace (and uniforms unless greedy_only) must be "
        "non-null");
  }
  if (p.logits_stride < p.vocab) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchSampling: logits_stride ",
                                                   p.logits_stride, " < vocab ", p.vocab));
  }
  if (reinterpret_cast<uintptr_t>(p.workspace) % kAlign != 0) {
    return absl::InvalidArgumentError("LaunchSampling: workspace must be 256-byte aligned");
  }
  Args a{};
  a.p = p;
  a.chunks = NumChunks(p.vocab);
  if (absl::Status s = SortTempBytes(p.batch, p.vocab, &a.w.sort_temp_bytes); !s.ok()) return s;
  Carve(static_cast<char*>(p.workspace), p.batch, p.vocab, &a.w);
  if (p.workspace_bytes < a.w.total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchSampling: workspace_bytes ",
                                                   p.workspace_bytes, " < the ", a.w.total_bytes,
                                                   " needed (SamplingWorkspaceBytes)"));
  }
  const dim3 chunk_grid(static_cast<unsigned>(a.chunks), static_cast<unsigned>(p.batch));
  PenalizeKernel<<<chunk_grid, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  ArgMaxKernel<<<p.batch, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (p.greedy_only) return absl::OkStatus();

  size_t temp_bytes = a.w.sort_temp_bytes;
  BITLOOM_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      a.w.sort_temp, temp_bytes, a.w.keys_in, a.w.keys_out, a.w.ids_in, a.w.ids_out,
      static_cast<int>(p.batch * p.vocab), 0, 32 + RowBits(p.batch), stream));
  SortedExpKernel<<<chunk_grid, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  SortedProbKernel<<<chunk_grid, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  SelectKernel<<<p.batch, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  DrawSumsKernel<<<chunk_grid, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  DrawKernel<<<p.batch, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitloom::kernels::cuda
