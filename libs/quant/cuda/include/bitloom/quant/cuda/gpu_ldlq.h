// GpuLdlq: FactorHessian and QuantizeLdlq (hessian.h, scalar_quantizer.h) on one GPU, producing
// the same QuantizedWeight (layout, CODEC_HADAMARD_SCALAR blob, relative proxy loss) as the CPU up
// to floating-point tolerance.
//
// Factor: the CPU's damping schedule exactly (dead diagonal entries set to mean(diag H); λ from
// DampingOptions, ×growth per failed attempt, then the diag(H) fallback), each attempt one cuSOLVER
// fp64 Cholesky of the reversed damped Hessian; then one cuBLAS fp64 triangular solve for the
// inverse factor, from which U (Hd⁻¹ = UᵀU, upper) is an index reversal. The factor keeps U in fp32
// (what LDLQ reads; the CPU also rounds U to fp32 per use) and H in fp64 (for the losses).
//
// Quantize: the CPU's LDLQ (same column order, blocks of 128 columns or one group if larger, group
// scales chosen by the same clipping grid and least-squares refinements, same fp32 feedback), rows
// in parallel (a warp per row), the lazy rank-128 update of the columns right of each block as one
// cuBLAS SGEMM (plain fp32, no TF32). Codes agree with the CPU's except where an fp32 rounding
// difference in the lazy update flips a code sitting on a rounding tie (tested: ≥ 99% equal).
//
// Measure: the measurement pass's call. It quantizes one tensor at several code widths in one
// stacked pass (up to 8 widths: the weight is copied once per width and every lazy update is a
// single GEMM over all copies), sharing the factor. Only the losses are needed there, so blobs are
// packed (on the device) only when asked for.
//
// Proxy loss: tr(Δ·H·Δᵀ)/tr(W·H·Wᵀ) with H undamped, as ProxyLoss. By default the numerator comes
// from LDLQ's own scaled errors: with Hd = H + diag(c) the damped Hessian, Δ = E·U exactly, so
// tr(Δ·Hd·Δᵀ) = Σe² and tr(Δ·H·Δᵀ) = Σe² − Σ c_i·Δ_i², for free (the CPU does the same, with
// c = HessianFactor::added_diagonal); the denominator is one fp64 GEMM per call, or
// options.output_energy when the caller has it. Under the diagonal fallback (Hd − H not
// diagonal), a damping above 0.1 (the difference would lose digits, as on the CPU), or with
// exact_proxy_loss, the numerator is an fp64 GEMM too. Agreement with the CPU: within 1% (tested).
//
// Ownership and threading: a GpuLdlq owns cuBLAS/cuSOLVER handles bound to its stream and a
// workspace that grows to the largest tensor seen (for Llama-3-8B's down_proj at 8 widths, about
// 2.5 GB plus 2·dim² fp64 during Factor); a GpuHessianFactor owns its device matrices. Calls are
// synchronous (they return host results) and not thread-safe; use one GpuLdlq per thread/stream.
// Device inputs are read on the GpuLdlq's stream. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/scalar_quantizer.h"

namespace bitloom::quant::cuda {

// The largest group size the GPU encoder takes (its LDLQ block is max(128, group)); larger groups
// get INVALID_ARGUMENT (use the CPU encoder).
inline constexpr int kGpuLdlqMaxGroupSize = 512;

struct GpuLdlqOptions {
  // Compute tr(Δ·H·Δᵀ) with fp64 GEMMs against H instead of from LDLQ's scaled errors (2·rows·
  // cols² more flops per width). Always done under the diagonal fallback.
  bool exact_proxy_loss = false;
};

// A Hessian factored on the device: H (fp64, undamped), U (fp32), and the damping record of
// HessianFactor. Move-only; made by GpuLdlq::Factor and usable by any GpuLdlq on the same device.
class GpuHessianFactor {
 public:
  GpuHessianFactor();
  ~GpuHessianFactor();
  GpuHessianFactor(GpuHessianFactor&&) noexcept;
  GpuHessianFactor& operator=(GpuHessianFactor&&) noexcept;

  int64_t dim() const { return dim_; }
  double relative_damp() const { return relative_damp_; }  // λ that succeeded
  int attempts() const { return attempts_; }                // 1 when the first λ worked
  bool diagonal_fallback() const { return diagonal_fallback_; }

 private:
  friend class GpuLdlq;
  struct Buffers;
  int64_t dim_ = 0;
  double relative_damp_ = 0.0;
  int attempts_ = 0;
  bool diagonal_fallback_ = false;
  std::unique_ptr<Buffers> buffers_;
};

class GpuLdlq {
 public:
  // All work goes to `stream` (null: the legacy default stream). INTERNAL when a handle or the
  // device is unavailable.
  static absl::StatusOr<std::unique_ptr<GpuLdlq>> Create(cudaStream_t stream,
                                                         const GpuLdlqOptions& options = {});
  ~GpuLdlq();
  GpuLdlq(const GpuLdlq&) = delete;
  GpuLdlq& operator=(const GpuLdlq&) = delete;

  // FactorHessian on the GPU. h: [dim, dim] mean Hessian (rotated, undamped) on the host.
  // INVALID_ARGUMENT for a size mismatch or a non-finite entry, like FactorHessian. `host_copy`,
  // when non-null, receives the factor in FactorHessian's form (U in fp64, added_diagonal), e.g.
  // for a checkpoint or the CPU encoder.
  absl::StatusOr<GpuHessianFactor> Factor(absl::Span<const double> h, int64_t dim,
                                          const DampingOptions& options,
                                          HessianFactor* host_copy = nullptr);
  // The same with h [dim, dim] fp64 in device memory (read in stream order on this GpuLdlq's
  // stream; copied, so it may be reused once this returns): no round trip through the host.
  absl::StatusOr<GpuHessianFactor> FactorDevice(const double* h, int64_t dim,
                                                const DampingOptions& options,
                                                HessianFactor* host_copy = nullptr);

  // QuantizeLdlq. w: [rows, cols] fp32 in rotated space, on the host (checked for non-finite
  // values, like the CPU) or on the device (not checked). INVALID_ARGUMENT for a shape that does
  // not match the factor, or options the codec or this encoder does not take.
  absl::StatusOr<QuantizedWeight> Quantize(absl::Span<const float> w, int64_t rows, int64_t cols,
                                           const GpuHessianFactor& factor,
                                           const ScalarQuantizerOptions& options);
  absl::StatusOr<QuantizedWeight> QuantizeDevice(const float* w, int64_t rows, int64_t cols,
                                                 const GpuHessianFactor& factor,
                                                 const ScalarQuantizerOptions& options);

  // One tensor at every code width in `bits` (options.bits is ignored), results in that order.
  // Each result has its layout and proxy_loss; its blob only when keep_blobs.
  absl::StatusOr<std::vector<QuantizedWeight>> Measure(absl::Span<const float> w, int64_t rows,
                                                       int64_t cols,
                                                       const GpuHessianFactor& factor,
                                                       absl::Span<const int> bits,
                                                       const ScalarQuantizerOptions& options,
                                                       bool keep_blobs = false);
  absl::StatusOr<std::vector<QuantizedWeight>> MeasureDevice(const float* w, int64_t rows,
                                                             int64_t cols,
                                                             const GpuHessianFactor& factor,
                                                             absl::Span<const int> bits,
                                                             const ScalarQuantizerOptions& options,
                                                             bool keep_blobs = false);

  // tr(W·H·Wᵀ) with the factor's undamped H: OutputEnergy, the allocation's importance. w on the
  // device, [rows, cols].
  absl::StatusOr<double> OutputEnergy(const float* w, int64_t rows, int64_t cols,
                                      const GpuHessianFactor& factor);

  cudaStream_t stream() const { return stream_; }

 private:
  // Factor's body once fb.h holds H: `diag` is H's diagonal as given.
  absl::StatusOr<GpuHessianFactor> FactorStaged(GpuHessianFactor out, std::vector<double> h_diag,
                                                const DampingOptions& options,
                                                HessianFactor* host_copy);
  struct Workspace;
  GpuLdlq(cudaStream_t stream, const GpuLdlqOptions& options, std::unique_ptr<Workspace> ws);
  absl::StatusOr<std::vector<QuantizedWeight>> Run(const float* w, int64_t rows, int64_t cols,
                                                   const GpuHessianFactor& factor,
                                                   absl::Span<const int> bits,
                                                   const ScalarQuantizerOptions& options,
                                                   bool keep_blobs);
  // Σ_r x_r·H·x_rᵀ per row into the workspace's row_quad, x = w − dequantized(codes) (or w).
  absl::Status QuadraticRows(const float* w, const uint8_t* codes, const uint16_t* scales,
                             int bits, int group_size, int64_t groups_per_row, int64_t rows,
                             int64_t cols, const GpuHessianFactor& factor, double* sum);

  cudaStream_t stream_;
  GpuLdlqOptions options_;
  std::unique_ptr<Workspace> ws_;
};

}  // namespace bitloom::quant::cuda
