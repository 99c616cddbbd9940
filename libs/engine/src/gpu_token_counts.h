// Token counts on the device for the GPU sampler's penalties (kernels/cuda/sampling.h takes dense
// [batch, vocab] prompt and output counts). GpuDecoderModel keeps one row of each per sequence
// (a "counts row", [vocab] int32) and bumps it as tokens are run: the prompt row by Prefill's ids,
// the output row by each decode step's input ids. Before sampling a batch whose rows have penalties
// it gathers those sequences' rows into batch order. Private to bitloom::engine_cuda.
//
// Launchers follow the kernel contract: asynchronous on `stream`, no allocation, no
// synchronisation, a launch shape fixed by the arguments; INVALID_ARGUMENT for a bad shape or a null
// pointer, INTERNAL for a launch error. Their CPU reference is the counting in Sampler::ApplyPenalties,
// which engine_gpu_decoder_test compares the penalised on-GPU draw against. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::engine::gpu {

// counts[row_i · vocab + ids[i]] += 1 for i < n, where row_i = rows[i] (or `row` when rows is null);
// an id with row_i < 0 is not counted. Repeated ids in one call add up (atomic adds).
struct CountTokensParams {
  int32_t* counts = nullptr;        // device [count rows, vocab]
  int64_t vocab = 0;                // >= 1
  const int32_t* ids = nullptr;     // device [n], each in [0, vocab)
  const int32_t* rows = nullptr;    // device [n]: each id's counts row (< 0: skip), or null
  int32_t row = 0;                  // every id's counts row when `rows` is null
  int n = 0;                        // >= 0
};
absl::Status LaunchCountTokens(const CountTokensParams& params, cudaStream_t stream);

// dst[b][v] = src[rows[b]][v] for b < batch with rows[b] >= 0 and v < vocab; other dst rows are
// left as they are.
struct GatherCountRowsParams {
  const int32_t* src = nullptr;   // device [count rows, vocab]
  int32_t* dst = nullptr;         // device [batch, vocab]
  const int32_t* rows = nullptr;  // device [batch]
  int batch = 0;                  // >= 0
  int64_t vocab = 0;              // >= 1
};
absl::Status LaunchGatherCountRows(const GatherCountRowsParams& params, cudaStream_t stream);

}  // namespace bitloom::engine::gpu
