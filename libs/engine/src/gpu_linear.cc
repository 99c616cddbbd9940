#include "gpu_linear.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "gpu_decoder_ops.h"

namespace bitloom::engine::gpu {

namespace cuda = kernels::cuda;

absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed: cuBLAS status ", static_cast<int>(status)));
}

absl::Status RunLinearGroup(absl::Span<const LinearOutput> outputs, const float* x, int64_t x_stride,
                            int64_t rows, const LinearScratch& scratch, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  // What the scratch holds for this x: the rotation last applied (width, seed), and whether the fp16
  // copy exists. Decided on the host while enqueuing, so the sequence is the same at every replay.
  bool have_rotated = false;
  int64_t rotated_n = 0;
  uint64_t rotated_seed = 0;
  bool have_dense = false;
  for (const LinearOutput& out : outputs) {
    const GpuLinear& w = *out.linear;
    if (w.quantized) {
      if (!have_rotated || rotated_n != w.rotation.n || rotated_seed != w.rotation.seed) {
        for (int64_t r0 = 0; r0 < rows; r0 += cuda::kMaxRotateBatch) {
          cuda::HadamardRotateParams rp;
          rp.rotation = w.rotation;
          rp.x = x + r0 * x_stride;
          rp.x_type = cuda::ActivationType::kF32;
          rp.x_stride = x_stride;
          rp.out = scratch.rotated + r0 * w.rotated_stride;
          rp.out_type = cuda::ActivationType::kF16;
          rp.out_stride = w.rotated_stride;
          rp.batch = static_cast<int>(std::min<int64_t>(cuda::kMaxRotateBatch, rows - r0));
          BITLOOM_RETURN_IF_ERROR(cuda::LaunchHadamardRotate(rp, stream));
        }
        have_rotated = true;
        rotated_n = w.rotation.n;
        rotated_seed = w.rotation.seed;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += cuda::kGemvMaxBatch) {
        cuda::ScalarCodecGemvParams gp = w.gemv;
        gp.x = scratch.rotated + r0 * w.rotated_stride;
        gp.x_stride = w.rotated_stride;
        gp.y = out.y + r0 * out.y_stride;
        gp.y_stride = out.y_stride;
        gp.batch = static_cast<int>(std::min<int64_t>(cuda::kGemvMaxBatch, rows - r0));
        BITLOOM_RETURN_IF_ERROR(cuda::LaunchScalarCodecGemv(gp, stream));
      }
    } else {
      if (!have_dense) {
        BITLOOM_RETURN_IF_ERROR(LaunchRowsToF16({x, x_stride, scratch.dense_in, w.cols, rows, w.cols}, stream));
        have_dense = true;
      }
      // Column-major view: W [rows, cols] row-major is cols×rows with ld = cols, so op(A) = Aᵀ gives
      // [rows, cols]; x is cols×n (ld cols); y is rows×n with ld y_stride, i.e. row-major [n, rows].
      const float alpha = 1.0f, beta = 0.0f;
      BITLOOM_RETURN_IF_ERROR(CublasStatus(
          cublasGemmEx(scratch.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(rows),
                       static_cast<int>(w.cols), &alpha, w.weight_f16, CUDA_R_16F, static_cast<int>(w.cols),
                       scratch.dense_in, CUDA_R_16F, static_cast<int>(w.cols), &beta, out.y, CUDA_R_32F,
                       static_cast<int>(out.y_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx"));
    }
    if (w.bias != nullptr) {
      BITLOOM_RETURN_IF_ERROR(LaunchAddBias({out.y, out.y_stride, w.bias, rows, w.rows}, stream));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::engine::gpu
