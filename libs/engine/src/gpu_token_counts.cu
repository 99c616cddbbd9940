// Token-count kernels of the GPU decoder's sampler (see gpu_token_counts.h).
//
// Layout. CountTokens: one thread per id, 256-thread blocks over n (a prefill chunk or a decode
// bucket: at most a few thousand ids), an atomicAdd each, since a chunk may repeat an id.
// GatherCountRows: a 2-D grid, blockIdx.y = batch row, blockIdx.x covering 256·8 columns with each
// thread striding by 256, so a warp reads and writes 128 contiguous bytes per access; a skipped row's
// blocks exit at once. The gather is bandwidth-bound (2·vocab·4 bytes per penalised row and count
// kind) and nothing is staged.

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "gpu_token_counts.h"

namespace bitloom::engine::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;  // columns per thread in the gather

__global__ void CountTokensKernel(CountTokensParams p) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= p.n) return;
  const int32_t row = p.rows != nullptr ? p.rows[i] : p.row;
  if (row < 0) return;
  atomicAdd(&p.counts[static_cast<int64_t>(row) * p.vocab + p.ids[i]], 1);
}

__global__ void GatherCountRowsKernel(GatherCountRowsParams p) {
  const int b = blockIdx.y;
  const int32_t row = p.rows[b];
  if (row < 0) return;
  const int32_t* src = p.src + static_cast<int64_t>(row) * p.vocab;
  int32_t* dst = p.dst + static_cast<int64_t>(b) * p.vocab;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kThreads * kItems;
  const int64_t end = begin + kThreads * kItems < p.vocab ? begin + kThreads * kItems : p.vocab;
  for (int64_t v = begin + threadIdx.x; v < end; v += kThreads) dst[v] = src[v];
}

}  // namespace

absl::Status LaunchCountTokens(const CountTokensParams& p, cudaStream_t stream) {
  if (p.counts == nullptr || p.ids == nullptr || p.vocab < 1 || p.n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("CountTokens: counts, ids non-null, vocab ", p.vocab,
                                                   " >= 1, n ", p.n, " >= 0"));
  }
  if (p.n == 0) return absl::OkStatus();
  CountTokensKernel<<<(p.n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchGatherCountRows(const GatherCountRowsParams& p, cudaStream_t stream) {
  if (p.src == nullptr || p.dst == nullptr || p.rows == nullptr || p.vocab < 1 || p.batch < 0 ||
      p.batch > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("GatherCountRows: src, dst, rows non-null, vocab ", p.vocab,
                                                   " >= 1, batch ", p.batch, " in [0, 65535]"));
  }
  if (p.batch == 0) return absl::OkStatus();
  const int64_t per_block = int64_t{kThreads} * kItems;
  const dim3 grid(static_cast<unsigned>((p.vocab + per_block - 1) / per_block), static_cast<unsigned>(p.batch));
  GatherCountRowsKernel<<<grid, kThreads, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitloom::engine::gpu
