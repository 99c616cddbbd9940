// GpuHessianAccumulator: the device twin of quant::HessianAccumulator (hessian.h). It sums x·xᵀ of
// a linear layer's inputs where the block forward produced them, on the GPU, so a conversion never
// copies activations to the host.
//
// Precision. Activations arrive as fp32 or fp16 [rows, dim] on the device. Each Add runs one
// cuBLAS product per piece: SSYRK for fp32 (fp32 products and sums on the CUDA cores; TF32 only
// with GpuHessianOptions::tf32_products) and GemmEx for fp16 (fp16 × fp16 products are exact in fp32, summed in fp32 on the
// tensor cores). The fp32 partial sum covers at most `flush_rows` rows; it is then folded into an
// fp64 total (upper triangle, the CPU accumulator's layout), so the rounding error of an entry is
// that of one fp32 sum of ≤ flush_rows terms (typically √flush_rows · 2⁻²⁴ ≈ 5e-6 relative to
// Σ|x_i·x_j| at 8192) however many tokens are added: "at least fp32", never worse with more data.
// Against the CPU's fp64 sums, entries agree to ~1e-5 of √(H_ii·H_jj) (tested).
//
// Ownership and threading: the accumulator owns its device memory (fp32 partial dim², fp64 total
// dim²) and a cuBLAS handle; all work is queued on the stream passed to each call. Not thread-safe.
// Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/quant/hessian.h"

namespace bitloom::quant::cuda {

enum class ActivationDtype { kF32, kF16 };

struct GpuHessianOptions {
  // Rows summed in fp32 before the partial is folded into the fp64 total. Smaller: less rounding,
  // one more dim² fp64 pass per flush (1.4 ms at dim 14336 on an H100).
  int64_t flush_rows = 8192;
  // fp32 activations: multiply on the tensor cores with the inputs rounded to TF32 (10-bit
  // mantissa; products and sums stay fp32, then fp64) instead of SSYRK on the CUDA cores: about 4x
  // the throughput for twice the products (the full square). An entry then moves by at most ~2e-3
  // of √(H_ii·H_jj) (the rounding of both factors; Cauchy–Schwarz bounds the sum of |x_i·x_j|),
  // far below LDLQ's damping (1% of the mean diagonal). fp16 activations are unaffected.
  bool tf32_products = false;
};

class GpuHessianAccumulator {
 public:
  // INVALID_ARGUMENT for dim ≤ 0 or flush_rows ≤ 0; INTERNAL when allocation or cuBLAS fails.
  static absl::StatusOr<std::unique_ptr<GpuHessianAccumulator>> Create(
      int64_t dim, const GpuHessianOptions& options = {});
  ~GpuHessianAccumulator();
  GpuHessianAccumulator(const GpuHessianAccumulator&) = delete;
  GpuHessianAccumulator& operator=(const GpuHessianAccumulator&) = delete;

  int64_t dim() const { return dim_; }
  // Calibration rows (tokens) added so far.
  int64_t rows() const { return rows_; }

  // H += Σ_r x_r·x_rᵀ for x [rows, dim] on the device, row r at x + r·ld elements (ld ≥ dim;
  // 0 means dim). Asynchronous on `stream`: x must stay valid until the stream reaches this work.
  absl::Status Add(const void* x, ActivationDtype dtype, int64_t rows, int64_t ld,
                   cudaStream_t stream);

  // The mean H / rows as a full symmetric [dim, dim] fp64 matrix, to the host (synchronises
  // `stream`) or into device memory `out` (asynchronous). All zeros when no rows were added. Both
  // fold the pending fp32 partial first.
  absl::StatusOr<std::vector<double>> Mean(cudaStream_t stream);
  absl::Status MeanToDevice(double* out, cudaStream_t stream);

  // The state as a CPU HessianAccumulator (same sums and row count, via Restore), for the
  // pipeline's checkpoints and RotateHessian. Synchronises `stream`.
  absl::StatusOr<HessianAccumulator> ToHost(cudaStream_t stream);

  // Back to zero rows.
  absl::Status Reset(cudaStream_t stream);

 private:
  struct State;
  GpuHessianAccumulator(int64_t dim, const GpuHessianOptions& options,
                        std::unique_ptr<State> state);
  absl::Status Flush(cudaStream_t stream);

  int64_t dim_;
  GpuHessianOptions options_;
  int64_t rows_ = 0;
  int64_t partial_rows_ = 0;  // rows in the fp32 partial, not yet in the fp64 total
  std::unique_ptr<State> state_;
};

}  // namespace bitloom::quant::cuda
