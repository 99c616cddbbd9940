// GpuHessianRotator: RotateHessian (hessian.h) on the GPU in fp64: H ← R·H·Rᵀ for a mean Hessian
// in device memory, instead of the CPU's fast transform on a dim² matrix (5.8 s per Llama-3-8B
// layer in the conversion benchmark).
//
// Method. R = R₀·D (kernels/hadamard.h): D = diag(signs) depends on the seed, R₀ = (B ⊗ H_L)/√(p·L)
// only on the width. R₀ is built once per width on the host (the rotation applied to the identity,
// n fast transforms, then the signs divided out) and kept on the device; per call, R = R₀·D is one
// cuBLAS DDGMM and R·H·Rᵀ two fp64 DGEMMs (4n³ flops: an estimated 0.1-0.2 s at n = 14336 on an
// H100, not yet measured). The result equals the CPU's to fp64 rounding (tested to 1e-12 of
// max|H|), not bit for bit, and is symmetric to that rounding.
//
// Memory: 8·n² bytes per width cached (1.6 GB at 14336) plus two n² fp64 work matrices that grow to
// the largest width. Ownership and threading: owns a cuBLAS handle and its device memory; work is
// queued on the stream passed to Rotate (host inputs are read before it returns). Not thread-safe.
// Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/hadamard.h"

namespace bitloom::quant::cuda {

class GpuHessianRotator {
 public:
  // INTERNAL when the cuBLAS handle cannot be made.
  static absl::StatusOr<std::unique_ptr<GpuHessianRotator>> Create();
  ~GpuHessianRotator();
  GpuHessianRotator(const GpuHessianRotator&) = delete;
  GpuHessianRotator& operator=(const GpuHessianRotator&) = delete;

  // h: device [n, n] fp64 symmetric, n = rotation.size(), rotated in place. `pool` (may be null)
  // builds R₀ the first time a width is seen. INVALID_ARGUMENT for a null h or n above 46340.
  absl::Status Rotate(double* h, const kernels::HadamardRotation& rotation, ThreadPool* pool,
                      cudaStream_t stream);

 private:
  struct State;
  explicit GpuHessianRotator(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace bitloom::quant::cuda
