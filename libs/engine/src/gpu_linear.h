// GpuLinear: one linear layer y = x·Wᵀ (+ b) of the GPU decoder, over weights already in the pool,
// and LinearGroup, which runs the linear layers that read one activation (q/k/v, gate/up) so that
// the input is prepared once per distinct form:
//  - CODEC_HADAMARD_SCALAR: x' = R·x in fp16 (LaunchHadamardRotate, zero-padded to 32 columns),
//    or, for one row on a power-of-two width when the caller allows it and the launch fits one
//    wave (UsesRotatingGemv), inside the GEMV's own thread blocks
//    (LaunchScalarCodecGemvGroupRotating): one launch per group.
//    Layers whose rotations have the same width and seed (the quantizer's shared input sites) reuse
//    one rotated copy. Then, for up to kGemmMinRows − 1 rows (decode), the batch-≤8 GEMV over
//    8-row slices, the layers on one rotated copy (q/k/v, gate/up) in one grouped launch
//    (LaunchScalarCodecGemvGroup); for more (prefill chunks, large decode buckets),
//    the prefill GEMM: slices of W' expanded to fp16 in scratch.dequant (LaunchScalarCodecDequant)
//    and multiplied by cuBLAS (fp16 in, fp32 accumulation and out), which reads the weight once
//    per chunk instead of once per 8 tokens.
//  - dense (an unquantized import): x in fp16, then cuBLAS GemmEx (fp16 inputs, fp32 output and
//    accumulation).
// Private to bitloom::engine_cuda. Launch-only: nothing is allocated or synchronised, and the launch
// sequence depends only on the shapes, so the calls can be captured in a CUDA graph.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"

namespace bitloom::engine::gpu {

// INTERNAL naming the call for a cuBLAS failure.
absl::Status CublasStatus(cublasStatus_t status, const char* what);

struct GpuLinear {
  std::string name;
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features
  bool quantized = false;
  // Quantized: the GEMV's weight fields (activation fields are set per call), the rotation, and
  // the row stride of its rotated fp16 input (blocks_per_row·32).
  kernels::cuda::ScalarCodecGemvParams gemv;
  kernels::cuda::RotationDesc rotation;
  int64_t rotated_stride = 0;
  // Dense: device fp16 [rows, cols].
  const uint16_t* weight_f16 = nullptr;
  // Device fp32 [rows], or null.
  const float* bias = nullptr;
};

// From this many rows on, a quantized layer runs as dequantize + cuBLAS GEMM rather than GEMVs:
// three or more GEMV passes each read the packed weight (K/16 of the fp16 bytes) at well under
// copy bandwidth, while the expansion writes and the GEMM reads the fp16 weight once at close to it.
inline constexpr int64_t kGemmMinRows = 3 * kernels::cuda::kGemvMaxBatch;

// The scratch a group's input is prepared in; sized by the model for its largest rows × width.
struct LinearScratch {
  uint16_t* rotated = nullptr;  // device fp16 [max_rows, rotated_stride of the widest quantized layer]
  uint16_t* dense_in = nullptr;  // device fp16 [max_rows, cols of the widest dense layer]; null if none
  // The prefill GEMM's fp16 weight slices (16-byte aligned); null when no call has kGemmMinRows
  // rows. A slice is as many whole rows as dequant_elems holds (at least one row of the widest).
  uint16_t* dequant = nullptr;
  int64_t dequant_elems = 0;
  // The tiled GEMV's offset terms of a rotated input (HadamardRotateParams::offset_terms): fp32
  // [2][offset_term_groups][offset_term_rows] (even, >= kGemvMaxBatch). When set, a one-row group
  // whose layers are all tiled at K = 2 has its rotation write them and its GEMV read them instead of
  // taking the activation sums by mma (inputs up to 128·offset_term_groups wide).
  float* offset_terms = nullptr;
  int64_t offset_term_groups = 0;
  int64_t offset_term_rows = 0;
  // Bound to `stream` with its workspace in the pool (cublasSetStream, then cublasSetWorkspace:
  // setting the stream again would drop the workspace, so it is never done per call).
  cublasHandle_t cublas = nullptr;
};

// One output of a group: y [rows, y_stride] fp32 of `linear`.
struct LinearOutput {
  const GpuLinear* linear = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
};

// A gated MLP's down-projection input before its activation: the rows the layers multiply are
// act(x) · up, x being the gate. The rotation of a quantized layer forms them as it loads
// (LaunchHadamardRotate's gated input), bit-identical to LaunchGatedActivation then the rotation,
// so the activation is neither launched nor written.
struct GatedInput {
  const float* up = nullptr;  // device [rows, up_stride] fp32; null: not gated
  int64_t up_stride = 0;
  kernels::Activation activation = kernels::Activation::kSilu;
};

// What the layers of a group multiply: rows x, or one of the two inputs the rotation of a
// quantized group builds as it loads (then every layer must be quantized: INVALID_ARGUMENT
// otherwise, a dense layer needs the input materialised by the caller):
//  - gated: x is the gate of act(x) · up;
//  - norm (norm.residual set, x null): the residual stream, += delta and RMS-normalised inside the
//    rotation (LaunchHadamardRotate's norm input). The residual is updated once per group even
//    when its layers need several rotations.
//
// allow_rotating_gemv lets a quantized group of one row rotate inside its GEMV (UsesRotatingGemv
// says whether it will). The GEMV's blocks all read the residual, so with a norm input the update
// goes to residual_out instead of back in place: the caller passes a second residual buffer there
// and from then on uses it as the residual stream.
struct LinearInput {
  const float* x = nullptr;  // device [rows, x_stride] fp32
  int64_t x_stride = 0;
  GatedInput gated;
  kernels::cuda::RotateNormInput norm;
  bool allow_rotating_gemv = false;
  float* residual_out = nullptr;  // norm input of a rotating GEMV: receives residual + delta
  // Attention input (x unused): the rows are decode attention's outputs, merged from these split
  // partials by the rotation (TakesAttentionSplits must hold for every layer of the group).
  kernels::cuda::DecodeAttentionSplits splits;
};

// Whether the input rotation of quantized `w` can merge `splits` for `rows` rows on a device of
// compute capability `sm` (the register-tiled schedule covers w's width).
bool TakesAttentionSplits(const GpuLinear& w, const kernels::cuda::DecodeAttentionSplits& splits, int64_t rows, int sm);

// Whether every output's layer is quantized (the fused inputs above apply).
bool AllQuantized(absl::Span<const LinearOutput> outputs);

// Whether RunLinearGroup(outputs, in, rows, ...) runs as one rotating GEMV launch: allowed, one
// row, not gated, every layer quantized with one shared rotation, and the launch fits the GPU in
// one wave (PreferRotatingGemv). A norm input must carry residual_out for this to be true.
bool UsesRotatingGemv(absl::Span<const LinearOutput> outputs, const LinearInput& in, int64_t rows);

// The rotating GEMV launch of one row (and the biases), for a caller that has already found that
// UsesRotatingGemv(outputs, in, 1); RunLinearGroup takes this path itself otherwise.
absl::Status RunRotatingGemv(absl::Span<const LinearOutput> outputs, const LinearInput& in, cudaStream_t stream);

// Rewrites the codes of every layer of `group` (the layers one grouped launch runs: q/k/v, o_proj,
// gate/up, down, the head) into the tiled layout (kernels/cuda/scalar_codec_tiled.h) in place and
// marks them, when every one of them takes it and they have at most two K (what one tiled launch reads);
// otherwise leaves the group as it is. Returns the bytes of codes rewritten. Asynchronous on `stream`.
absl::StatusOr<uint64_t> RetileGroup(absl::Span<GpuLinear* const> group, cudaStream_t stream);

// Runs every output's layer on `in` (all read the same input; cols must match).
absl::Status RunLinearGroup(absl::Span<const LinearOutput> outputs, const LinearInput& in, int64_t rows,
                            const LinearScratch& scratch, cudaStream_t stream);

}  // namespace bitloom::engine::gpu
