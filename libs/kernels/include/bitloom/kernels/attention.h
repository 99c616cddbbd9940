// AttentionF32: causal multi-head attention of new queries over a KV cache, with grouped-query heads,
// an optional sliding window and optional score soft-capping.
//
// For query token t (position P_t) and head h, with kv head g = h / (num_heads / num_kv_heads):
//   s_j = scale · q[t,h] · k[j,g]   over cache slots j whose key position p_j satisfies
//         p_j <= P_t  and, when sliding_window > 0,  P_t − p_j < sliding_window,
//   (s_j ← cap · tanh(s_j / cap) when logit_softcap > 0),
//   out[t,h] = Σ_j softmax(s)_j · v[j,g].
// Masking by stored positions rather than slot indices keeps the kernel independent of how the cache
// is laid out; the window rule is transformers' (a key exactly `window` tokens back is out).
// Each (t, h) is computed on its own in a fixed order, so a query gets the same bits in prefill and in
// decode. Scores and softmax are fp32 with a double-precision normaliser. A query with no visible key
// gets a zero output (cannot happen with causal positions, since a token sees itself).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

struct AttentionParams {
  const float* q = nullptr;              // [num_tokens, num_heads, head_dim]
  const float* k = nullptr;              // [num_kv, num_kv_heads, head_dim], slot-major
  const float* v = nullptr;              // [num_kv, num_kv_heads, head_dim]
  const int32_t* q_positions = nullptr;  // [num_tokens]
  const int32_t* kv_positions = nullptr;  // [num_kv]
  float* out = nullptr;                  // [num_tokens, num_heads, head_dim]; must not alias q/k/v
  int64_t num_tokens = 0;
  int64_t num_kv = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;              // divides num_heads
  int64_t head_dim = 0;
  float scale = 0.0f;                    // score multiplier, usually 1/√head_dim
  float logit_softcap = 0.0f;            // 0: off
  int64_t sliding_window = 0;            // 0: global attention
};

absl::Status AttentionF32(const AttentionParams& params, ThreadPool* pool);

}  // namespace bitloom::kernels
