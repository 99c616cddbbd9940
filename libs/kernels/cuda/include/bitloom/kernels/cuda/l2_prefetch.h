// Warming the GPU's L2 cache with bytes a later kernel will read: LaunchL2Prefetch asks L2 for up to
// kMaxL2PrefetchRanges device ranges, in order, and returns without waiting for them. It reads
// nothing into registers or shared memory and writes nothing, so it has no effect on any result.
//
// Meant for a second stream (a side branch of a captured decode step) while the main stream runs
// kernels that leave DRAM idle (attention, element-wise stages), so that a weight-streaming GEMV
// after them finds its first bytes in L2. Whether it pays depends on what else passes through L2 in
// between; `bitloom bench --l2_prefetch_mb` measures it (docs/KERNELS.md, "L2 prefetch branch").
//
// Ownership: the caller owns the ranges. The launcher is asynchronous on `stream`, allocates
// nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bitloom::kernels::cuda {

inline constexpr int kMaxL2PrefetchRanges = 8;

struct L2PrefetchRange {
  const void* data = nullptr;  // device
  int64_t bytes = 0;           // >= 0; 0 is skipped
};

// INVALID_ARGUMENT for more than kMaxL2PrefetchRanges ranges, a negative size or a null range with
// bytes; INTERNAL for a CUDA launch error. Nothing is launched when every range is empty.
absl::Status LaunchL2Prefetch(absl::Span<const L2PrefetchRange> ranges, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
