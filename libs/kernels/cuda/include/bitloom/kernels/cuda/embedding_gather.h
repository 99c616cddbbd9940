// The token-embedding lookup on the GPU: out[t] = table[ids[t]] · scale, from the fp16 embedding
// table (as the artifact stores it) into the fp32 residual stream. scale is 1, or √hidden for Gemma
// (the caller's fp32 value, as for EmbeddingF32 in kernels/embedding.h). Each output is one fp32
// multiply of the exactly widened fp16 value, so it equals EmbeddingF32 over the widened table bit
// for bit.
//
// Bad ids: the CPU returns INVALID_ARGUMENT, but a launcher cannot look at device ids without a
// synchronisation. Here an id outside [0, vocab) never reads the table: its row of `out` is written
// with zeros and, when `bad_id_count` is given, the count is incremented once for that token (the
// caller zeroes it, e.g. with cudaMemsetAsync in the same graph, and reads it with the step's other
// results). The scheduler validates ids on the host before they reach the GPU; this is the backstop.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`, allocates
// nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::kernels::cuda {

struct EmbeddingGatherParams {
  const uint16_t* table = nullptr;  // device [vocab, hidden] fp16 (IEEE bits)
  const int32_t* ids = nullptr;     // device [tokens]
  float* out = nullptr;             // device [tokens, hidden] fp32
  int64_t vocab = 0;                // >= 1
  int64_t hidden = 0;               // >= 1
  int64_t tokens = 0;               // 0 is a no-op
  float scale = 1.0f;
  int32_t* bad_id_count = nullptr;  // device, optional: += 1 per token whose id is out of range
};

// INVALID_ARGUMENT for a bad shape or a null table, ids or out; INTERNAL for a CUDA launch error.
absl::Status LaunchEmbeddingGather(const EmbeddingGatherParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
