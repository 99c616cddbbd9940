// Device helpers of the paged attention kernels (paged_attention.cu): cache addressing, fp16/fp32
// loads and stores of 8 or 4 elements, the score transform and the guarded exponentials of the
// online softmax.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "bitloom/kernels/cuda/attention_splits.h"

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

// Splits holding tokens of a sequence of `len` cached tokens (the others wrote nothing).
__device__ __forceinline__ int SplitsOfSequence(int len, int window, int split_len, int num_splits) {
  const int start = window > 0 ? max(0, len - window) : 0;
  return min(num_splits, (len - start + split_len - 1) / split_len);
}

// Dim d of `head` of sequence b, merged over the splits of a deferred decode launch with
// DecodeCombineKernel's arithmetic (the max over splits, weights ExpDiff(m_s, max), then fmaf in
// split order), so the result equals that kernel's bit for bit; the splits' loads are unrolled so
// that they are in flight together.
__device__ __forceinline__ float MergeDecodeSplit(const DecodeAttentionSplits& s, int b, int head, int d) {
  const int64_t row0 = (int64_t{b} * s.num_heads + head) * s.num_splits;
  const int splits = SplitsOfSequence(s.seq_lens[b], s.window, s.split_len, s.num_splits);
  const float* ml = s.ml + row0 * 2;
  float mx = -INFINITY;
#pragma unroll 8
  for (int k = 0; k < splits; ++k) mx = fmaxf(mx, ml[2 * k]);
  float sum = 0.0f, v = 0.0f;
  const float* acc = s.acc + row0 * s.head_dim + d;
#pragma unroll 8
  for (int k = 0; k < splits; ++k) {
    const float w = ExpDiff(ml[2 * k], mx);
    sum = fmaf(w, ml[2 * k + 1], sum);
    v = fmaf(w, acc[int64_t{k} * s.head_dim], v);
  }
  return sum > 0.0f ? v / sum : 0.0f;
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

}  // namespace bitloom::kernels::cuda::detail
