// Per-head q/k RMSNorm + RoPE + paged KV-cache store (see qkv_rope.h).
//
// Layout: grid (tokens, ceil(items / 4)), 128 threads = 4 warps; an *item* is one head vector of one
// token: items [0, H) are the query heads, [H, H + KV) the key heads, [H + KV, H + 2·KV) the value
// heads. Each warp owns one item, so a decode step (1-8 tokens, ~50 items each) still spreads over
// tens of SMs. Lane l holds the rotation pairs (i, i + d/2) for i = l, l + 32, ... < d/2 in registers
// (at most 8 pairs: head_dim ≤ 512), which is exactly what both the norm (a warp-shuffle sum of x²
// in double, as RmsNormF32 accumulates) and the rotate-half RoPE need: no shared-memory round trip.
// The block first computes cos/sin of its token's d/2 angles into shared memory (d/2 double
// sincos per block, recomputed by the few blocks of one token: cheaper than a table in memory).
// Loads and stores are coalesced along the head (lane-contiguous i). All fp32 arithmetic uses
// explicit __f*_rn intrinsics so nvcc cannot contract a·b − c·d into an FMA the CPU does not use.

#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/qkv_rope.h"
#include "block_reduce.cuh"
#include "dependent_launch.cuh"
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPairsPerLane = kMaxRopeHeadDim / 2 / 32;  // 8

__global__ void __launch_bounds__(kWarps * 32) QkvRopeKernel(QkvRopeParams p, int log_page_size) {
  extern __shared__ float trig[];  // cos [half], then sin [half]
  detail::AllowDependentLaunch();
  const int half = p.head_dim / 2;
  float* cos_s = trig;
  float* sin_s = trig + half;
  const int64_t t = blockIdx.x;
  // Everything but q, k and v is known before the kernels ahead finish (positions, token_seq and
  // block_tables are step inputs, qkv_rope.h): the angles and the cache page are worked out while
  // they run, and only the projections are read after the wait.
  const int32_t pos = p.positions[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = __fmul_rn(static_cast<float>(pos), p.inv_freq[i]);  // fp32, as transformers
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    cos_s[i] = __fmul_rn(static_cast<float>(c), p.attention_scaling);
    sin_s[i] = __fmul_rn(static_cast<float>(s), p.attention_scaling);
  }
  const int page_index = pos >> log_page_size;
  const int32_t page = pos >= 0 && page_index < p.max_pages_per_seq
                           ? p.block_tables[static_cast<int64_t>(p.token_seq[t]) * p.max_pages_per_seq + page_index]
                           : -1;
  detail::WaitForPredecessorsAfter(static_cast<uint32_t>(page));
  __syncthreads();

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int item = blockIdx.y * kWarps + warp;
  const int H = p.num_heads, KV = p.num_kv_heads;
  if (item >= H + 2 * KV) return;
  const int hd = p.head_dim;

  // Where the item's vector comes from and goes to.
  const bool is_q = item < H;
  const bool is_v = item >= H + KV;
  const int head = is_q ? item : (is_v ? item - H - KV : item - H);
  const float* src = is_q ? p.q + t * p.q_stride : (is_v ? p.v + t * p.v_stride : p.k + t * p.k_stride);
  src += static_cast<int64_t>(head) * hd;

  float x1[kPairsPerLane], x2[kPairsPerLane];
#pragma unroll
  for (int j = 0; j < kPairsPerLane; ++j) {
    const int i = lane + 32 * j;
    x1[j] = i < half ? src[i] : 0.0f;
    x2[j] = i < half ? src[i + half] : 0.0f;
  }

  if (!is_v) {
    const float* norm_w = is_q ? p.q_norm : p.k_norm;
    if (norm_w != nullptr) {
      double sum_sq = 0.0;
#pragma unroll
      for (int j = 0; j < kPairsPerLane; ++j) {
        sum_sq += static_cast<double>(x1[j]) * x1[j] + static_cast<double>(x2[j]) * x2[j];
      }
      sum_sq = detail::WarpSum(sum_sq);
      const float inv_rms = detail::InvRms(sum_sq, hd, p.norm_eps);
#pragma unroll
      for (int j = 0; j < kPairsPerLane; ++j) {
        const int i = lane + 32 * j;
        if (i < half) {
          x1[j] = __fmul_rn(__fmul_rn(x1[j], inv_rms), __fadd_rn(norm_w[i], p.norm_weight_offset));
          x2[j] = __fmul_rn(__fmul_rn(x2[j], inv_rms),
                            __fadd_rn(norm_w[i + half], p.norm_weight_offset));
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kPairsPerLane; ++j) {
      const int i = lane + 32 * j;
      if (i < half) {
        const float c = cos_s[i], s = sin_s[i];
        const float a = x1[j], b = x2[j];
        x1[j] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        x2[j] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
      }
    }
  }

  if (is_q) {
    const int64_t base = (t * H + head) * hd;
#pragma unroll
    for (int j = 0; j < kPairsPerLane; ++j) {
      const int i = lane + 32 * j;
      if (i < half) {
        if (p.q_out_f32 != nullptr) {
          p.q_out_f32[base + i] = x1[j];
          p.q_out_f32[base + i + half] = x2[j];
        }
        if (p.q_out_f16 != nullptr) {
          __half* q16 = reinterpret_cast<__half*>(p.q_out_f16);
          q16[base + i] = __float2half_rn(x1[j]);
          q16[base + i + half] = __float2half_rn(x2[j]);
        }
      }
    }
    return;
  }

  // K or V into the cache slot of this token; skipped when the slot is not addressable.
  if (page < 0 || page >= p.num_pages) return;
  const int slot = pos & (p.page_size - 1);
  __half* cache = reinterpret_cast<__half*>(is_v ? p.v_cache : p.k_cache);
  const int64_t base = ((static_cast<int64_t>(page) * p.page_size + slot) * KV + head) * hd;
#pragma unroll
  for (int j = 0; j < kPairsPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i < half) {
      cache[base + i] = __float2half_rn(x1[j]);
      cache[base + i + half] = __float2half_rn(x2[j]);
    }
  }
}

absl::Status Validate(const QkvRopeParams& p) {
  if (p.tokens < 0 || p.tokens > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchQkvRope: tokens ", p.tokens,
                                                   " outside [0, 2^31)"));
  }
  if (p.head_dim < 2 || p.head_dim > kMaxRopeHeadDim || p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchQkvRope: head_dim ", p.head_dim,
                                                   " must be even and in [2, ", kMaxRopeHeadDim,
                                                   "]"));
  }
  if (p.num_kv_heads < 1 || p.num_heads < 1 || p.num_heads % p.num_kv_heads != 0 ||
      p.num_heads + 2 * p.num_kv_heads > 65535 * kWarps) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchQkvRope: num_heads ", p.num_heads,
                                                   " must be a positive multiple of num_kv_heads ",
                                                   p.num_kv_heads));
  }
  const int64_t q_dim = int64_t{p.num_heads} * p.head_dim;
  const int64_t kv_dim = int64_t{p.num_kv_heads} * p.head_dim;
  if (p.q_stride < q_dim || p.k_stride < kv_dim || p.v_stride < kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchQkvRope: strides q ", p.q_stride, ", k ", p.k_stride, ", v ", p.v_stride,
        " must be >= ", q_dim, ", ", kv_dim, ", ", kv_dim));
  }
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.positions == nullptr ||
      p.inv_freq == nullptr || p.k_cache == nullptr || p.v_cache == nullptr ||
      p.block_tables == nullptr || p.token_seq == nullptr) {
    return absl::InvalidArgumentError(
        "LaunchQkvRope: q, k, v, positions, inv_freq, k_cache, v_cache, block_tables and "
        "token_seq must be non-null");
  }
  if ((p.q_norm == nullptr) != (p.k_norm == nullptr)) {
    return absl::InvalidArgumentError("LaunchQkvRope: q_norm and k_norm must both be given or both null");
  }
  if (p.q_out_f32 == nullptr && p.q_out_f16 == nullptr) {
    return absl::InvalidArgumentError("LaunchQkvRope: q_out_f32 and q_out_f16 are both null");
  }
  if (p.page_size < 1 || (p.page_size & (p.page_size - 1)) != 0 || p.num_pages < 1 ||
      p.max_pages_per_seq < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchQkvRope: page_size ", p.page_size, " must be a power of two, num_pages ",
        p.num_pages, " and max_pages_per_seq ", p.max_pages_per_seq, " >= 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchQkvRope(const QkvRopeParams& p, cudaStream_t stream) {
  if (absl::Status s = Validate(p); !s.ok()) return s;
  if (p.tokens == 0) return absl::OkStatus();
  int log_page_size = 0;
  while ((1 << log_page_size) < p.page_size) ++log_page_size;
  const int items = p.num_heads + 2 * p.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(p.tokens), static_cast<unsigned>((items + kWarps - 1) / kWarps));
  const size_t smem = sizeof(float) * static_cast<size_t>(p.head_dim);
  return detail::LaunchKernel({grid, dim3(kWarps * 32), smem}, stream, QkvRopeKernel, p,
                              log_page_size);
}

}  // namespace bitloom::kernels::cuda
