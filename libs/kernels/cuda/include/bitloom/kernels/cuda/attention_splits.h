// Where a decode-attention launch that splits each sequence's KV range leaves its per-split partial
// results when the merge is deferred to the next kernel (PagedDecodeAttentionParams::defer_combine):
// the o_proj input rotation then merges them as it loads its input (HadamardRotateParams::splits),
// with the combine kernel's arithmetic, so one launch per decode layer goes away. Plain C++ header;
// the pointers are device memory owned by the attention's caller (its workspace).
#pragma once

#include <cstdint>

namespace bitloom::kernels::cuda {

struct DecodeAttentionSplits {
  const float* acc = nullptr;         // [batch, num_heads, num_splits, head_dim] unnormalised sums
  const float* ml = nullptr;          // [batch, num_heads, num_splits, 2]: (max, sum) of each split
  const int32_t* seq_lens = nullptr;  // [batch]: the attended lengths (the attention's seq_lens)
  int num_heads = 0;
  int head_dim = 0;    // 64, 128 or 256
  int num_splits = 0;  // > 1 when set
  int split_len = 0;   // tokens per split
  int window = 0;      // the layer's sliding window, 0: global attention
};

}  // namespace bitloom::kernels::cuda
