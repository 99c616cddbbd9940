// The step between the QKV projections and attention on the GPU, fused into one launch: for each
// token t (at position positions[t] of sequence token_seq[t]),
//   q[t, h]  -> [per-head RMSNorm with q_norm] -> RoPE  -> q_out (fp32 and/or fp16)
//   k[t, h'] -> [per-head RMSNorm with k_norm] -> RoPE  -> the paged K cache (fp16)
//   v[t, h']                                            -> the paged V cache (fp16)
// The norm is Qwen3's / Gemma 3's q_norm/k_norm (RmsNormF32 over head_dim, Σx² in double, weight +
// weight_offset); RoPE is RopeF32's "rotate half" layout (kernels/rope.h) with the model's inv_freq
// table (a device copy of RopeTable::inv_freq) and attention_scaling. Angles are formed as the CPU and
// transformers form them: the fp32 product of the fp32 position and the fp32 frequency, then cos and
// sin (evaluated in double and rounded to fp32, as RopeF32 does), times attention_scaling. The
// rotation itself is fp32 without fused multiply-adds, so q_out in fp32 equals RopeF32's result up to
// a last-bit difference of the device's double cos/sin (in practice bit for bit).
//
// Paged KV cache (docs/KERNELS.md, the GPU runtime contract): per layer K and V are
// [num_pages][page_size][num_kv_heads][head_dim] fp16; token t goes to page
// block_tables[token_seq[t]·max_pages_per_seq + positions[t] / page_size], slot
// positions[t] % page_size. A token whose position is negative, whose page index is past
// max_pages_per_seq or whose page id is outside [0, num_pages) is not stored (never an out-of-bounds
// write); the scheduler guarantees this does not happen, so there is no error flag.
//
// Dependent launch: the kernel reads positions, token_seq, block_tables and inv_freq before it
// waits for the kernels ahead (the angles and cache pages are worked out while those run), so they
// must hold valid values from the start of the launch (the engine copies them in before the step);
// q, k and v may come from the kernels ahead.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`, allocates
// nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::kernels::cuda {

inline constexpr int kMaxRopeHeadDim = 512;

struct QkvRopeParams {
  // The projections, fp32 (GEMV outputs; q, k and v may be slices of one fused output).
  const float* q = nullptr;  // device [tokens, q_stride]; columns [0, num_heads·head_dim) read
  int64_t q_stride = 0;      // elements, >= num_heads·head_dim
  const float* k = nullptr;  // device [tokens, k_stride]; columns [0, num_kv_heads·head_dim) read
  int64_t k_stride = 0;      // elements, >= num_kv_heads·head_dim
  const float* v = nullptr;  // device [tokens, v_stride]
  int64_t v_stride = 0;      // elements, >= num_kv_heads·head_dim
  int64_t tokens = 0;        // 0 is a no-op
  int num_heads = 0;         // query heads, a multiple of num_kv_heads
  int num_kv_heads = 0;
  int head_dim = 0;          // even, 2..kMaxRopeHeadDim

  // RoPE.
  const int32_t* positions = nullptr;  // device [tokens]: position in the sequence = cache slot
  const float* inv_freq = nullptr;     // device [head_dim / 2], RopeTable::inv_freq
  float attention_scaling = 1.0f;      // RopeTable::attention_scaling

  // Optional per-head RMSNorm before RoPE (qk_norm models): both weights or neither.
  const float* q_norm = nullptr;  // device [head_dim] fp32, or null
  const float* k_norm = nullptr;  // device [head_dim] fp32, or null
  float norm_eps = 1e-6f;
  float norm_weight_offset = 0.0f;  // 1 for Gemma 3

  // Rotated queries: at least one of the two.
  float* q_out_f32 = nullptr;     // device [tokens, num_heads, head_dim] fp32, or null
  uint16_t* q_out_f16 = nullptr;  // device [tokens, num_heads, head_dim] fp16, or null

  // This layer's paged KV cache.
  uint16_t* k_cache = nullptr;  // device [num_pages, page_size, num_kv_heads, head_dim] fp16
  uint16_t* v_cache = nullptr;  // same shape
  int64_t num_pages = 0;
  int page_size = 0;                      // a power of two
  const int32_t* block_tables = nullptr;  // device [num_seqs, max_pages_per_seq] page ids
  int max_pages_per_seq = 0;
  const int32_t* token_seq = nullptr;     // device [tokens]: the block_tables row of each token
};

// INVALID_ARGUMENT for a bad shape, stride, head_dim, page size, a q_norm without k_norm (or the
// reverse), a missing q output or any null required pointer; INTERNAL for a CUDA launch error.
absl::Status LaunchQkvRope(const QkvRopeParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
