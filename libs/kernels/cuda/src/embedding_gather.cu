// Token-embedding gather, fp16 table -> fp32 rows (see embedding_gather.h).
//
// Layout: one thread block per token, 256 threads strided over the row. When hidden is a multiple of
// 8 and the table is 16-byte aligned (every real model), each thread moves 8 halves with one 16-byte
// load and two 16-byte stores; otherwise one element at a time. The id is read once per block and
// checked before any table address is formed.

#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/embedding_gather.h"
#include "dependent_launch.cuh"
#include "device_util.cuh"
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <bool kVec8>
__global__ void EmbeddingGatherKernel(EmbeddingGatherParams p) {
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  const int64_t t = blockIdx.x;
  const int32_t id = p.ids[t];
  float* out = p.out + t * p.hidden;
  if (id < 0 || id >= p.vocab) {
    for (int64_t i = threadIdx.x; i < p.hidden; i += kThreads) out[i] = 0.0f;
    if (threadIdx.x == 0 && p.bad_id_count != nullptr) atomicAdd(p.bad_id_count, 1);
    return;
  }
  const __half* row = reinterpret_cast<const __half*>(p.table) + static_cast<int64_t>(id) * p.hidden;
  if constexpr (kVec8) {
    const uint4* src = reinterpret_cast<const uint4*>(row);
    float4* dst = reinterpret_cast<float4*>(out);
    for (int64_t i = threadIdx.x; i < p.hidden / 8; i += kThreads) {
      const uint4 w = src[i];
      const float2 a = __half22float2(detail::U32AsHalf2(w.x));
      const float2 b = __half22float2(detail::U32AsHalf2(w.y));
      const float2 c = __half22float2(detail::U32AsHalf2(w.z));
      const float2 d = __half22float2(detail::U32AsHalf2(w.w));
      dst[2 * i] = make_float4(a.x * p.scale, a.y * p.scale, b.x * p.scale, b.y * p.scale);
      dst[2 * i + 1] = make_float4(c.x * p.scale, c.y * p.scale, d.x * p.scale, d.y * p.scale);
    }
  } else {
    for (int64_t i = threadIdx.x; i < p.hidden; i += kThreads) {
      out[i] = __half2float(row[i]) * p.scale;
    }
  }
}

}  // namespace

absl::Status LaunchEmbeddingGather(const EmbeddingGatherParams& p, cudaStream_t stream) {
  if (p.vocab < 1 || p.vocab > INT32_MAX || p.hidden < 1 || p.tokens < 0 ||
      p.tokens > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchEmbeddingGather: vocab ", p.vocab,
                                                   ", hidden ", p.hidden, ", tokens ", p.tokens,
                                                   ": needs vocab in [1, 2^31), hidden >= 1, "
                                                   "tokens in [0, 2^31)"));
  }
  if (p.table == nullptr || p.ids == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError("LaunchEmbeddingGather: table, ids and out must be non-null");
  }
  if (p.tokens == 0) return absl::OkStatus();
  const bool vec8 = p.hidden % 8 == 0 && reinterpret_cast<uintptr_t>(p.table) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  const detail::KernelShape shape{dim3(static_cast<unsigned>(p.tokens)), dim3(kThreads)};
  return detail::LaunchKernel(shape, stream,
                              vec8 ? EmbeddingGatherKernel<true> : EmbeddingGatherKernel<false>, p);
}

}  // namespace bitloom::kernels::cuda
