// Gated MLP activation, SwiGLU or GeGLU(tanh) (see gated_activation.h).
//
// Layout: a 2-D grid, blockIdx.y = row, blockIdx.x·256 + threadIdx.x = column: each thread one
// element, coalesced along the row. Purely bandwidth-bound (12-16 bytes per element), so nothing is
// staged. Rows above 65535 fold into the x dimension's loop (grid.y is capped).

#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/gated_activation.h"
#include "dependent_launch.cuh"
#include "gated_activation.cuh"
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

template <Activation kAct>
__global__ void GatedActivationKernel(GatedActivationParams p) {
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (col >= p.dim) return;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const float v = detail::Gated<kAct>(p.gate[r * p.gate_stride + col], p.up[r * p.up_stride + col]);
    if (p.out_f32 != nullptr) p.out_f32[r * p.dim + col] = v;
    if (p.out_f16 != nullptr) reinterpret_cast<__half*>(p.out_f16)[r * p.dim + col] = __float2half_rn(v);
  }
}

}  // namespace

absl::Status LaunchGatedActivation(const GatedActivationParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.dim < 1 || p.dim > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchGatedActivation: rows ", p.rows,
                                                   " must be >= 0 and dim ", p.dim,
                                                   " in [1, 2^30]"));
  }
  if (p.gate == nullptr || p.up == nullptr) {
    return absl::InvalidArgumentError("LaunchGatedActivation: gate and up must be non-null");
  }
  if (p.out_f32 == nullptr && p.out_f16 == nullptr) {
    return absl::InvalidArgumentError("LaunchGatedActivation: out_f32 and out_f16 are both null");
  }
  if (p.gate_stride < p.dim || p.up_stride < p.dim) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchGatedActivation: gate_stride ",
                                                   p.gate_stride, " and up_stride ", p.up_stride,
                                                   " must be >= dim ", p.dim));
  }
  if (p.rows == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>((p.dim + kThreads - 1) / kThreads),
                  static_cast<unsigned>(p.rows < kMaxGridY ? p.rows : kMaxGridY));
  return detail::LaunchKernel({grid, dim3(kThreads)}, stream,
                              p.activation == Activation::kSilu
                                  ? GatedActivationKernel<Activation::kSilu>
                                  : GatedActivationKernel<Activation::kGeluTanh>,
                              p);
}

}  // namespace bitloom::kernels::cuda
