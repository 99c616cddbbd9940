// Encoders of CODEC_HADAMARD_SCALAR: LDLQ (GPTQ-equivalent error feedback) and round-to-nearest.
//
// Both take a weight already in rotated space (W' = W·Rᵀ, see kernels/hadamard.h) and, for LDLQ and
// the proxy loss, the matching Hessian H' = R·H·Rᵀ; both produce the blob of
// kernels/scalar_codec.h.
//
// LDLQ processes columns left to right: quantize column i, then push its error, scaled by row i of
// U (Hinv = Uᵀ·U, see hessian.h), onto the columns not yet quantized, which is the closed-form
// optimum of the proxy loss tr(ΔH'Δᵀ) for sequential rounding (GPTQ, Frantar et al. 2022;
// equivalently LDLQ, Chee et al. 2023). Columns go in blocks of 128 (a multiple of the group size):
// errors are applied eagerly inside the block and lazily, as one rank-128 update, to the columns
// right of it, so U's rows are read once per block and tile of rows rather than once per column.
// Each group's scale is chosen when LDLQ reaches the group's first column, from the error-updated
// weights, by a clipping grid search plus a least-squares refinement, rounded to fp16 *before*
// coding so the encoder uses the decoder's scale.
//
// Rows are independent given U, so threads split rows; every row's arithmetic is the same whatever
// the thread count: the output is bit-identical across pools. Functions are thread-safe (no shared
// state).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/quant/hessian.h"

namespace bitloom::quant {

struct ScalarQuantizerOptions {
  int bits = 4;                                       // K, 1..8
  int group_size = kernels::kScalarDefaultGroupSize;  // columns per fp16 scale, multiple of 32
  // Clipping candidates α·max|w| per group, α from 1 down to min_clip in `clip_steps` steps.
  int clip_steps = 16;
  double min_clip = 0.4;
  // tr(W·H·Wᵀ) of the weight being quantized when the caller already has it (measuring several
  // widths of one tensor); negative: computed. Only the proxy loss's denominator.
  double output_energy = -1.0;
};

struct QuantizedWeight {
  kernels::ScalarCodecLayout layout;
  std::vector<uint8_t> blob;  // layout.total_bytes
  // tr(Δ·H·Δᵀ) / tr(W·H·Wᵀ) with Δ = W − dequantized, H undamped; −1 when no Hessian was given.
  double proxy_loss = -1.0;
};

// w: [rows, cols] in rotated space; h: [cols, cols] mean Hessian in rotated space (undamped, for
// the loss); factor: FactorHessian(h) (shared by tensors that read the same input).
absl::StatusOr<QuantizedWeight> QuantizeLdlq(absl::Span<const float> w, int64_t rows, int64_t cols,
                                             absl::Span<const double> h,
                                             const HessianFactor& factor,
                                             const ScalarQuantizerOptions& options,
                                             ThreadPool* pool);

// The baseline: each group's scale by the same search, every weight rounded to the nearest level,
// no error feedback. h may be empty (proxy_loss is then −1).
absl::StatusOr<QuantizedWeight> QuantizeRtn(absl::Span<const float> w, int64_t rows, int64_t cols,
                                            absl::Span<const double> h,
                                            const ScalarQuantizerOptions& options,
                                            ThreadPool* pool);

// tr(Δ·H·Δᵀ) / tr(W·H·Wᵀ), Δ = w − q (fp32 products, fp64 sums). 0 when W·H·Wᵀ has zero trace and
// Δ = 0. w_energy: tr(W·H·Wᵀ) when known, else negative.
double ProxyLoss(absl::Span<const float> w, absl::Span<const float> q, int64_t rows, int64_t cols,
                 absl::Span<const double> h, ThreadPool* pool, double w_energy = -1.0);

// tr(W·H·Wᵀ): the output energy of the layer on the calibration set (the allocation's importance).
double OutputEnergy(absl::Span<const float> w, int64_t rows, int64_t cols,
                    absl::Span<const double> h, ThreadPool* pool);

}  // namespace bitloom::quant
