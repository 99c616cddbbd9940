// L2Prefetch: device byte ranges, typically the next GEMV's packed weights, that a decode-path kernel
// asks the L2 cache to fetch while it runs, so that the GEMV after it finds them there.
//
// Why: a batch-1 decode layer alternates DRAM-bound GEMVs with short kernels (q/k RoPE, attention,
// rotations) during which DRAM idles. Those kernels issue one `cp.async.bulk.prefetch.L2` per piece
// of the ranges (sm_90; nothing on older devices) right after they start, before they wait for the
// kernel ahead, so the weights stream in while the short stages run. It is only a hint: no result
// depends on it, nothing is written, and the ranges must hold data no kernel of the step writes.
// The start is rounded up and the end down to 16 bytes, as the instruction requires.
// Plain C++ header.
#pragma once

#include <cstdint>

namespace bitloom::kernels::cuda {

struct L2PrefetchRange {
  const void* data = nullptr;  // device memory, or null (nothing)
  uint64_t bytes = 0;
};

inline constexpr int kMaxL2PrefetchRanges = 2;  // a weight's codes and its scales

struct L2Prefetch {
  L2PrefetchRange ranges[kMaxL2PrefetchRanges];
};

}  // namespace bitloom::kernels::cuda
