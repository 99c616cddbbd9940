// QuantBackend: where the quantization pipeline's O(n³) work runs: accumulating each input site's
// Hessian, rotating and factoring it, and LDLQ-quantizing a tensor at one or several code widths.
// QuantizationPipeline (quantization_pipeline.h) keeps everything else (the blocks' forwards, the
// rotation of the weights, the allocation, checkpoints) and calls only this interface, so the CPU
// and the GPU produce the same artifact up to floating-point tolerance through one code path.
//
// CpuQuantBackend (here) is exactly the CPU functions of hessian.h and scalar_quantizer.h, so a
// pipeline on it is bit-identical to one before backends existed. The GPU backend
// (libs/quant/cuda, quant/cuda/gpu_quant_backend.h) is built only with CUDA.
//
// Inputs and outputs are host memory whatever the backend: activations and weights fp32,
// QuantizedWeight as scalar_quantizer.h defines it. A SiteFactor made by one backend is usable
// only by that backend (INVALID_ARGUMENT otherwise). Backends are not thread-safe: one pipeline
// at a time; objects they return must not outlive them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/matmul_f32.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/scalar_quantizer.h"

namespace bitloom::quant {

// One input site's Hessian Σ x·xᵀ, being accumulated on a backend.
class SiteHessian {
 public:
  virtual ~SiteHessian() = default;
  virtual int64_t dim() const = 0;
  virtual int64_t rows() const = 0;
  // H += Σ_r x_r·x_rᵀ for x [rows, dim] row-major fp32 on the host; x may be reused on return.
  virtual absl::Status Add(absl::Span<const float> x, int64_t rows) = 0;
  // Whether AddOnDevice is implemented (the GPU backend).
  virtual bool AcceptsDeviceRows() const { return false; }
  // H += Σ_r x_r·x_rᵀ for x [rows, dim] row-major fp32 in the current CUDA device's memory, ready
  // on `stream` (a cudaStream_t, see block_runner.h's DeviceCaptureFn); the work is queued there.
  virtual absl::Status AddOnDevice(const float* /*x*/, int64_t /*rows*/, void* /*stream*/) {
    return absl::UnimplementedError("SiteHessian::AddOnDevice: a host-only backend");
  }
  // The state in HessianAccumulator's form (the sums and the row count), e.g. for a checkpoint;
  // HessianAccumulator::Restore() of it continues on the CPU.
  virtual absl::StatusOr<HessianAccumulator> ToHost() = 0;
};

// A site's mean Hessian in rotated space, factored for LDLQ; shared by the tensors of the site.
class SiteFactor {
 public:
  virtual ~SiteFactor() = default;
  virtual int64_t dim() const = 0;
};

class QuantBackend {
 public:
  virtual ~QuantBackend() = default;

  // "cpu", or "gpu: <device name>" (the job log and the manifest's quantizer_version say this).
  virtual std::string Describe() const = 0;

  virtual absl::StatusOr<std::unique_ptr<SiteHessian>> NewHessian(int64_t dim) = 0;

  // mean(H) rotated as RotateHessian does (H' = R·H·Rᵀ) and factored as FactorHessian does.
  virtual absl::StatusOr<std::unique_ptr<SiteFactor>> Factor(
      SiteHessian& hessian, const kernels::HadamardRotation& rotation,
      const DampingOptions& damping) = 0;

  // QuantizeLdlq of w [rows, cols] (rotated space) against the factor's Hessian.
  virtual absl::StatusOr<QuantizedWeight> Quantize(absl::Span<const float> w, int64_t rows,
                                                   int64_t cols, const SiteFactor& factor,
                                                   const ScalarQuantizerOptions& options) = 0;

  // The measurement pass's call: QuantizeLdlq of one tensor at every width in `bits` (in that
  // order; options.bits is ignored). Every result has its layout and relative proxy loss; only the
  // first result of width `blob_bits` keeps its blob (the pipeline's sensitivity probe), the
  // others' blobs are empty. blob_bits outside `bits` keeps none.
  virtual absl::StatusOr<std::vector<QuantizedWeight>> Measure(
      absl::Span<const float> w, int64_t rows, int64_t cols, const SiteFactor& factor,
      absl::Span<const int> bits, const ScalarQuantizerOptions& options, int blob_bits) = 0;
  // y = x·wᵀ with kernels::MatmulF32's parameters, host memory in and out: the pipeline's dense
  // products beyond LDLQ (the output's Fisher information, output_fisher.h). The CPU backend is
  // MatmulF32 itself; the GPU backend multiplies with cuBLAS in fp32, equal up to summation order.
  virtual absl::Status Matmul(const kernels::MatmulF32Params& params) = 0;
};

// The CPU backend: HessianAccumulator, RotateHessian, FactorHessian, QuantizeLdlq on `pool` (may
// be null: one thread). Measure computes OutputEnergy once and passes it to every width.
class CpuQuantBackend final : public QuantBackend {
 public:
  explicit CpuQuantBackend(ThreadPool* pool) : pool_(pool) {}

  std::string Describe() const override { return "cpu"; }
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
  absl::Status Matmul(const kernels::MatmulF32Params& params) override {
    return kernels::MatmulF32(params, pool_);
  }

 private:
  ThreadPool* pool_;
};

}  // namespace bitloom::quant
