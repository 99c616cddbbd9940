// Layout: y [rows, cols] fp32 row-major, bias [cols]. A grid-stride loop over the rows·cols
// elements, 256 threads a block, consecutive threads on consecutive columns (coalesced; the bias
// row stays in L1/L2). At most 4096 blocks: enough to fill any GPU, the loop covers the rest.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "row_bias.h"

namespace bitloom::quant::cuda::internal {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

__global__ void AddRowBiasKernel(float* __restrict__ y, const float* __restrict__ bias,
                                 int64_t total, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * kThreads) {
    y[i] += bias[i % cols];
  }
}

}  // namespace

absl::Status LaunchAddRowBias(float* y, const float* bias, int64_t rows, int64_t cols,
                              cudaStream_t stream) {
  if (rows < 0 || cols < 1 || (rows > 0 && (y == nullptr || bias == nullptr))) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchAddRowBias: ", rows, " rows of ", cols, " or a null pointer"));
  }
  const int64_t total = rows * cols;
  if (total == 0) return absl::OkStatus();
  const int64_t blocks = std::min(kMaxBlocks, (total + kThreads - 1) / kThreads);
  AddRowBiasKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(y, bias, total, cols);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda::internal
