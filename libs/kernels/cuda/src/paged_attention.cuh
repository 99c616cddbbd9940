// Device helpers of the paged attention kernels (paged_attention.cu): cache addressing, fp16/fp32
// loads and stores of 8 or 4 elements, the score transform and the guarded exponentials of the
// online softmax, and the merge of decode's split partials.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace bitloom::kernels::cuda::detail {

// Element offset (in fp16 units) of dim 0 of kv head `kv_head` at position `t` of the sequence
// whose block table is `table`: page table[t / page_size], slot t % page_size.
template <int D>
__device__ __forceinline__ int64_t KvOffset(const int32_t* table, int t, int page_shift,
                                            int num_kv_heads, int kv_head) {
  const int64_t page = __ldg(table + (t >> page_shift));
  const int64_t slot = t & ((1 << page_shift) - 1);
  return (((page << page_shift) + slot) * num_kv_heads + kv_head) * D;
}

__device__ __forceinline__ float2 HalfPairToFloat2(uint32_t u) {
  __half2 h;
  __builtin_memcpy(&h, &u, 4);
  return __half22float2(h);
}

__device__ __forceinline__ void Uint4ToFloat8(const uint4 w, float (&f)[8]) {
  const float2 a = HalfPairToFloat2(w.x), b = HalfPairToFloat2(w.y);
  const float2 c = HalfPairToFloat2(w.z), d = HalfPairToFloat2(w.w);
  f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

// 8 consecutive elements at element offset `off` (a multiple of 8) of an fp16 or fp32 tensor.
__device__ __forceinline__ void LoadFloat8(const void* base, bool f16, int64_t off, float (&f)[8]) {
  if (f16) {
    Uint4ToFloat8(__ldg(reinterpret_cast<const uint4*>(static_cast<const __half*>(base) + off)), f);
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + off);
    const float4 a = __ldg(p), b = __ldg(p + 1);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  }
}

// 4 consecutive elements at element offset `off` (a multiple of 4).
__device__ __forceinline__ float4 LoadFloat4(const void* base, bool f16, int64_t off) {
  if (f16) {
    const uint2 w = __ldg(reinterpret_cast<const uint2*>(static_cast<const __half*>(base) + off));
    const float2 a = HalfPairToFloat2(w.x), b = HalfPairToFloat2(w.y);
    return make_float4(a.x, a.y, b.x, b.y);
  }
  return __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(base) + off));
}

// 2 consecutive elements at element offset `off` (even).
__device__ __forceinline__ void StoreFloat2(void* base, bool f16, int64_t off, float x, float y) {
  if (f16) {
    *reinterpret_cast<__half2*>(static_cast<__half*>(base) + off) = __floats2half2_rn(x, y);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(base) + off) = make_float2(x, y);
  }
}

__device__ __forceinline__ void StoreFloat1(void* base, bool f16, int64_t off, float x) {
  if (f16) {
    static_cast<__half*>(base)[off] = __float2half_rn(x);
  } else {
    static_cast<float*>(base)[off] = x;
  }
}

// AttentionF32's score: scale·(q·k), then cap·tanh(s/cap) when the cap is on.
__device__ __forceinline__ float TransformScore(float dot, float scale, float softcap) {
  const float s = dot * scale;
  return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
}

// exp(x − m) for the online softmax, with x = −inf (a masked score, or the empty state's max)
// giving 0 even when m is −inf too (where x − m would be NaN).
__device__ __forceinline__ float ExpDiff(float x, float m) {
  return x == -INFINITY ? 0.0f : __expf(x - m);
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Where one group of decode splits keeps its partials: split s of query head head0 + h is row
// row0 + h·num_splits + s of acc [rows][D] and ml [rows][2] (max, sum).
struct DecodeSplitRows {
  const float* acc;
  const float* ml;
  int64_t row0;
  int num_splits;
  int splits;  // how many of them hold tokens (1..num_splits): only those were written
};

// Merges the splits of `heads` (<= H) query heads into out[out0 + h·D + d] with a block of kThreads
// threads; the same arithmetic as DecodeCombineKernel (max over the splits, weights exp(m − max),
// sums in split order), so both paths give the same bits. The partials were written by other blocks
// of this grid (other SMs): read through L2 (__ldcg), never the non-coherent path. `scratch`: shared
// memory for 2·kMaxSplits·H floats (weights and sums, [split][head]).
//   - Weights: warp w takes heads w, w + warps, ...; lanes stride over the splits, the max is a
//     butterfly; each lane rewrites its own splits' maxima into weights.
//   - Sums: thread t owns the 4 consecutive outputs at element 4·(t + kThreads·j), j < J4 (element =
//     h·D + d; D is a multiple of 4, so the 4 share a head). The splits go in chunks of U: the
//     J4·U float4 loads of a chunk are issued (predicated past the last split) before its FMAs,
//     64 floats in flight per thread, so the merge costs a few L2 round trips, not one per split.
template <int D, int H, int kThreads, int kMaxSplits>
__device__ __forceinline__ void MergeDecodeSplits(const DecodeSplitRows& r, int heads,
                                                  float* scratch, void* out, bool out_f16,
                                                  int64_t out0) {
  static_assert(D % 4 == 0, "4 outputs of a thread share a head");
  constexpr int kWarps = kThreads / 32;
  constexpr int J4 = (H * D / 4 + kThreads - 1) / kThreads;
  constexpr int U = J4 >= 8 ? 2 : 16 / J4;
  float* weight = scratch;                 // [kMaxSplits][H]
  float* lsum = scratch + kMaxSplits * H;  // [kMaxSplits][H]
  const int lane = threadIdx.x & 31;
  for (int h = threadIdx.x >> 5; h < heads; h += kWarps) {
    const float2* ml = reinterpret_cast<const float2*>(r.ml) + r.row0 + int64_t{h} * r.num_splits;
    float mx = -INFINITY;
    for (int s = lane; s < r.splits; s += 32) {
      const float2 v = __ldcg(ml + s);
      weight[s * H + h] = v.x;
      lsum[s * H + h] = v.y;
      mx = fmaxf(mx, v.x);
    }
    mx = WarpMax(mx);
    for (int s = lane; s < r.splits; s += 32) weight[s * H + h] = ExpDiff(weight[s * H + h], mx);
  }
  __syncthreads();
  int hj[J4];
  bool on[J4];
  const float4* acc[J4];
  float sum[J4], val[J4][4];
#pragma unroll
  for (int j = 0; j < J4; ++j) {
    const int e = 4 * (threadIdx.x + kThreads * j);
    on[j] = e < heads * D;
    hj[j] = on[j] ? e / D : 0;
    acc[j] = reinterpret_cast<const float4*>(r.acc + (r.row0 + int64_t{hj[j]} * r.num_splits) * D +
                                             e % D);
    sum[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) val[j][i] = 0.0f;
  }
  for (int s0 = 0; s0 < r.splits; s0 += U) {
    float4 x[U][J4];
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int j = 0; j < J4; ++j) {
        x[u][j] = on[j] && s0 + u < r.splits ? __ldcg(acc[j] + int64_t{s0 + u} * (D / 4))
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (s0 + u < r.splits) {
#pragma unroll
        for (int j = 0; j < J4; ++j) {
          const float w = weight[(s0 + u) * H + hj[j]];
          sum[j] = fmaf(w, lsum[(s0 + u) * H + hj[j]], sum[j]);
          val[j][0] = fmaf(w, x[u][j].x, val[j][0]);
          val[j][1] = fmaf(w, x[u][j].y, val[j][1]);
          val[j][2] = fmaf(w, x[u][j].z, val[j][2]);
          val[j][3] = fmaf(w, x[u][j].w, val[j][3]);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < J4; ++j) {
    if (on[j]) {
      const int64_t e = out0 + 4 * (threadIdx.x + kThreads * j);
      const bool any = sum[j] > 0.0f;
      StoreFloat2(out, out_f16, e, any ? val[j][0] / sum[j] : 0.0f,
                  any ? val[j][1] / sum[j] : 0.0f);
      StoreFloat2(out, out_f16, e + 2, any ? val[j][2] / sum[j] : 0.0f,
                  any ? val[j][3] / sum[j] : 0.0f);
    }
  }
}

}  // namespace bitloom::kernels::cuda::detail
