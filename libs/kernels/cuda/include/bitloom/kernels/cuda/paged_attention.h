// Attention over the paged fp16 KV cache on the GPU: decode (one new query token per sequence,
// flash-decoding: the KV range is split across thread blocks and the partial softmaxes are
// combined) and prefill (new query tokens of one or several sequences, causal against everything
// cached up to each token's own position, flash-attention tiles with an online softmax, on the
// tensor cores unless exact_fp32 asks for the fp32 kernel).
//
// Semantics are AttentionF32's (kernels/attention.h) with the keys read from the cache: query head
// h uses kv head h / (num_heads / num_kv_heads); a key at position p is visible to a query at
// position P when p <= P and, with sliding_window > 0, P − p < sliding_window; scores are
// scale·q·k, soft-capped to cap·tanh(s/cap) when logit_softcap > 0. Scores, softmax and
// accumulation are fp32 (prefill's tensor-core kernel rounds q and the probabilities to fp16
// before the products). A query that sees no key gets zeros. The cache layout is the runtime
// contract (docs/KERNELS.md "Paged attention"): K and V each
// [num_pages][page_size][num_kv_heads][head_dim] fp16, position t of a sequence in page
// block_table[t / page_size], slot t % page_size. The caller writes the new tokens' K/V into the
// cache before it launches attention over them.
//
// Graph capture: the launch configuration of each kernel is a pure function of the shape fields
// (decode: batch, heads, head_dim, max_seq_len bound, window); sequence lengths and positions are
// read on the device only. Decode's partial results go to a caller-provided workspace
// (DecodeAttentionWorkspaceBytes).
//
// Ownership: the caller owns every device buffer. Launchers are asynchronous on `stream`, allocate
// nothing, never synchronise and never log; they are thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/kernels/cuda/attention_splits.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"  // ActivationType

namespace bitloom::kernels::cuda {

// One layer's paged KV cache plus the block tables of the sequences being attended.
struct PagedKvCache {
  // Device fp16 [num_pages][page_size][num_kv_heads][head_dim] each, 16-byte aligned.
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int page_size = 16;  // tokens per page, a power of two
  int num_kv_heads = 0;
  int head_dim = 0;                       // 64, 128 or 256
  const int32_t* block_tables = nullptr;  // device int32 [num_seqs, max_pages_per_seq], page ids
  int max_pages_per_seq = 0;
};

// Decode: query b is the last cached token of sequence b (position seq_lens[b] − 1).
struct PagedDecodeAttentionParams {
  PagedKvCache cache;       // block table row b belongs to query b
  const void* q = nullptr;  // device [batch, num_heads, head_dim] of q_type; 16-B aligned
  ActivationType q_type = ActivationType::kF16;
  // Device [batch, num_heads, head_dim] of out_type; 16-byte aligned, aliasing nothing.
  void* out = nullptr;
  ActivationType out_type = ActivationType::kF32;
  // Device [batch]: cached tokens of sequence b including this step's, 0..max_seq_len.
  const int32_t* seq_lens = nullptr;
  int batch = 0;      // 1..kDecodeMaxBatch
  int num_heads = 0;  // a multiple of cache.num_kv_heads
  // Bound on every seq_lens[b] (<= max_pages_per_seq·page_size); it alone fixes the split, so
  // tokens past it are not attended.
  int max_seq_len = 0;
  float scale = 0.0f;          // score multiplier, usually 1/√head_dim
  float logit_softcap = 0.0f;  // 0: off
  int sliding_window = 0;      // 0: global attention
  void* workspace = nullptr;  // device, >= DecodeAttentionWorkspaceBytes(*this) bytes, 16-B aligned
  size_t workspace_bytes = 0;
  // With more than one split, launch only the split kernel and leave the partials in the workspace
  // for a consumer that merges them as it loads (DeferredDecodeSplits); `out` is not written then.
  bool defer_combine = false;
};

inline constexpr int kDecodeMaxBatch = 65535;  // grid.z
inline constexpr int kDecodeMaxSplits = 256;

// How a decode launch divides the work; a pure function of the shape fields of the params.
struct DecodeAttentionPlan {
  int heads_per_block = 1;  // query heads of one kv head that a thread block serves (1, 2, 4 or 8)
  int head_chunks = 1;      // blocks per kv head: ceil(group / heads_per_block)
  int num_splits = 1;       // blocks along each sequence's visible KV range; 1: no combine pass
  int split_len = 0;        // tokens per split, a multiple of 16; num_splits·split_len covers the
                            // range min(max_seq_len, sliding_window or ∞)
};

// Reads only batch, num_heads, cache.num_kv_heads, cache.head_dim, max_seq_len and sliding_window.
DecodeAttentionPlan PlanDecodeAttention(const PagedDecodeAttentionParams& params);

// Workspace for the partial (max, sum, accumulator) of every split: 0 when the plan has one split,
// else batch·num_heads·num_splits·(head_dim + 2)·4 bytes. A pure function of the same shape fields;
// size it per batch-size bucket.
size_t DecodeAttentionWorkspaceBytes(const PagedDecodeAttentionParams& params);

// Where a launch of these params with defer_combine leaves its partials (the workspace, the plan's
// splits); num_splits is 0 when the plan has one split (nothing is deferred, `out` is written).
DecodeAttentionSplits DeferredDecodeSplits(const PagedDecodeAttentionParams& params);

// Whether the kernels run these params on compute capability `sm`: sm_80 or newer and valid params.
bool IsSupported(int sm, const PagedDecodeAttentionParams& params);

// out[b, h] = attention of q[b, h] over positions [0, seq_lens[b]) of sequence b. INVALID_ARGUMENT
// for inconsistent, null or misaligned params or a short workspace; INTERNAL for a CUDA launch
// error. Two launches (split kernel, combine kernel) when the plan has more than one split, unless
// defer_combine. With dependent launch, both kernels read seq_lens, and the split kernel also
// block_tables and the K/V rows before the newest, before they wait for the kernels ahead, so
// those must hold valid lengths, page ids and rows from the start of the launch (the engine
// copies the first two in before the step; earlier steps wrote the rows); q and the cache's
// newest rows (position seq_lens[b] − 1) may come from the kernels ahead.
absl::Status LaunchPagedDecodeAttention(const PagedDecodeAttentionParams& params,
                                        cudaStream_t stream);

// Prefill: any number of new tokens of any sequences, flattened; tokens of a sequence need not be
// adjacent (adjacent ones share key loads).
struct PagedPrefillAttentionParams {
  PagedKvCache cache;
  const void* q = nullptr;  // device [num_tokens, num_heads, head_dim] of q_type; 16-B aligned
  ActivationType q_type = ActivationType::kF16;
  void* out = nullptr;  // device [num_tokens, num_heads, head_dim] of out_type; 16-B aligned
  ActivationType out_type = ActivationType::kF32;
  const int32_t* token_seq = nullptr;  // device [num_tokens]: the token's row of block_tables
  const int32_t* token_pos = nullptr;  // device [num_tokens]: its position; keys 0..pos are cached
  int num_tokens = 0;                  // 0 launches nothing
  int num_heads = 0;                   // a multiple of cache.num_kv_heads
  float scale = 0.0f;
  float logit_softcap = 0.0f;
  int sliding_window = 0;
  // false (default): the tensor-core kernel (mma.sync, fp16 Q and softmax probabilities, fp32
  // accumulation; within 2e-3 of max(1, max|out|) of AttentionF32 in the tests). true: the fp32
  // FMA kernel, AttentionF32's arithmetic up to summation order, ~10× slower (reference runs).
  bool exact_fp32 = false;
};

bool IsSupported(int sm, const PagedPrefillAttentionParams& params);

// out[t, h] = attention of q[t, h] over positions [0, token_pos[t]] of sequence token_seq[t].
// INVALID_ARGUMENT for inconsistent, null or misaligned params; INTERNAL for a CUDA launch error.
absl::Status LaunchPagedPrefillAttention(const PagedPrefillAttentionParams& params,
                                         cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
