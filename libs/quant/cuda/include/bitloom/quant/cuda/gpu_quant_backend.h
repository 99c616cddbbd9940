// GpuQuantBackend: the QuantBackend (quant/quant_backend.h) of one GPU, over GpuHessianAccumulator
// and GpuLdlq. The pipeline's fp32 activations arrive in device memory from GpuBlockRunner
// (SiteHessian::AddOnDevice) or in host memory from another runner (uploaded through one staging
// buffer of at most kStagingRows rows); weights arrive in host memory. The Hessian sums and LDLQ
// stay on the device, and the results come back as the CPU's types.
//
// What runs where, all on the GPU: Hessian accumulation (cuBLAS SSYRK, fp32 partial sums folded
// into fp64), the mean's rotation R·H·Rᵀ (GpuHessianRotator: fp64 GEMMs), factorisation (cuSOLVER
// fp64 Cholesky, GpuLdlq::FactorDevice on the rotated mean where it lies) and LDLQ at one or all
// code widths. The host builds each width's R₀ once (the pool).
// Results agree with CpuQuantBackend to the tolerances of gpu_ldlq.h (codes ≥ 99% equal, proxy
// losses within 1%); they are deterministic on one GPU model and library version.
//
// Ownership and threading: the backend owns a GpuLdlq (handles and a workspace that grows to the
// largest tensor), a GpuHessianRotator (R₀ of every width seen), the staging buffer and one dim²
// fp64 Hessian buffer; every call runs on the legacy default stream and returns
// with its results on the host. The current device when Create() runs is the one used. Not
// thread-safe. Plain C++ header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/quant/cuda/gpu_hessian_rotation.h"
#include "bitloom/quant/cuda/gpu_ldlq.h"
#include "bitloom/quant/quant_backend.h"

namespace bitloom::quant::cuda {

class GpuQuantBackend final : public QuantBackend {
 public:
  // Activation rows uploaded per SSYRK: bounds the staging buffer (dim · 8192 · 4 bytes).
  static constexpr int64_t kStagingRows = 8192;

  // Whether a CUDA device is visible (cudaGetDeviceCount succeeds with at least one).
  static bool DevicePresent();

  // FAILED_PRECONDITION without a CUDA device; INTERNAL when a handle cannot be made. `pool` (may
  // be null) builds the rotations' R₀ on the host.
  static absl::StatusOr<std::unique_ptr<GpuQuantBackend>> Create(ThreadPool* pool);
  ~GpuQuantBackend() override;

  std::string Describe() const override { return description_; }
  absl::StatusOr<std::unique_ptr<SiteHessian>> NewHessian(int64_t dim) override;
  absl::StatusOr<std::unique_ptr<SiteFactor>> Factor(SiteHessian& hessian,
                                                     const kernels::HadamardRotation& rotation,
                                                     const DampingOptions& damping) override;
  absl::StatusOr<QuantizedWeight> Quantize(absl::Span<const float> w, int64_t rows, int64_t cols,
                                           const SiteFactor& factor,
                                           const ScalarQuantizerOptions& options) override;
  absl::StatusOr<std::vector<QuantizedWeight>> Measure(absl::Span<const float> w, int64_t rows,
                                                       int64_t cols, const SiteFactor& factor,
                                                       absl::Span<const int> bits,
                                                       const ScalarQuantizerOptions& options,
                                                       int blob_bits) override;
  // cuBLAS SGEMM (fp32 products and sums, no TF32) through device copies of x, w and y.
  absl::Status Matmul(const kernels::MatmulF32Params& params) override;

 private:
  struct Staging;
  GpuQuantBackend(ThreadPool* pool, std::string description, std::unique_ptr<GpuLdlq> ldlq,
                  std::unique_ptr<GpuHessianRotator> rotator);

  ThreadPool* pool_;
  std::string description_;
  std::unique_ptr<GpuLdlq> ldlq_;
  std::unique_ptr<GpuHessianRotator> rotator_;
  std::unique_ptr<Staging> staging_;  // shared by every SiteHessian of this backend
};

}  // namespace bitloom::quant::cuda
