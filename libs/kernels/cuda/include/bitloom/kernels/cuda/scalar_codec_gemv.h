// The decode GEMV of CODEC_HADAMARD_SCALAR on the GPU: y[b] = W'·x'[b] for a small batch (1-8),
// where W' is the packed weight exactly as the artifact stores it (kernels/scalar_codec.h,
// docs/QUANTIZATION.md §2) and x' the *already rotated* activations (LaunchHadamardRotate with an
// fp16 output, or a producer kernel that fuses the rotation).
//
// Types: activations in fp16 (the rotated workspace, zero-padded to blocks_per_row·32 columns,
// 16-byte aligned rows), output fp32, accumulation fp32 on the tensor cores (mma.m16n8k16). Weights
// are decoded to fp16 (q·s − c·s, one rounding), so the result matches the fp32 CPU reference
// (ScalarCodecGemv) to about 1e-3 relative; docs/KERNELS.md has the design and measured speed.
//
// Grouped launch: LaunchScalarCodecGemvGroup runs up to kGemvMaxGroup matrices that read the same
// activations (q/k/v, gate/up) in one kernel launch; each keeps its own K, rows, group size and
// output, so a layer with variable bits per tensor still costs one launch and one wave.
//
// Self-rotating launch (batch 1): LaunchScalarCodecGemvGroupRotating takes the *unrotated* input
// (a plain fp32 row, or the residual stream with its RMSNorm) and every thread block forms x' = R·x
// in its own shared memory after issuing its first weight loads, so the rotation kernel, its launch
// gap and the round trip of x' through memory drop out of the decode step. Each block redoes the
// transform (n·log n adds, n·12 bytes read from L2), which is why PreferRotatingGemv only
// recommends it when all blocks of the launch fit on the GPU at once.
//
// Ownership: the caller owns every device buffer. The launchers are asynchronous on `stream`,
// allocate nothing, never synchronise and never log; they are thread-safe and graph-capturable
// (the launch configuration is a function of the params' shapes only). Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/scalar_codec.h"

namespace bitloom::kernels::cuda {

inline constexpr int kGemvMaxBatch = 8;  // the mma's n = 8 columns carry the batch
inline constexpr int kGemvMaxGroup = 4;  // matrices per grouped launch (q/k/v, gate/up)
inline constexpr int64_t kGemvMaxCols = int64_t{1} << 24;  // the kernel indexes blocks in 32 bits

struct ScalarCodecGemvParams {
  // The weight, from its ScalarCodecLayout (MakeGemvParams fills these).
  int64_t rows = 0;              // out_features
  int64_t cols = 0;              // in_features
  int bits = 0;                  // K, 1..8
  int group_size = 0;            // columns per fp16 scale, multiple of 32
  int64_t blocks_per_row = 0;    // ceil(cols / 32)
  int64_t groups_per_row = 0;    // ceil(cols / group_size)
  int64_t row_stride_words = 0;  // uint32 words per packed row (multiple of 4)
  const uint32_t* codes = nullptr;   // device, the blob's codes section; 16-byte aligned
  const uint16_t* scales = nullptr;  // device, the blob's scales section, fp16 [rows, groups]
  // The codes are in the tiled layout (scalar_codec_tiled.h: K = 2, 3, 4 or 8, rewritten in VRAM at load),
  // not the artifact's; the launchers then run the tiled kernels.
  bool tiled = false;
  // Activations and output.
  const uint16_t* x = nullptr;  // device fp16 [batch, x_stride], rotated, zero in [cols, 32·B)
  int64_t x_stride = 0;         // elements, >= blocks_per_row·32, multiple of 8 (16-byte rows)
  float* y = nullptr;           // device fp32 [batch, y_stride]
  int64_t y_stride = 0;         // elements, >= rows
  int batch = 0;                // 1..kGemvMaxBatch
  // Tiled launches whose entries are all at K = 2 or 3 (scalar_codec_tiled.h): the offset terms of x
  // that the rotation wrote (HadamardRotateParams::offset_terms, from row 0 of this slice), which
  // then stand in for the kernel's activation-sum mma; null: the mma. Ignored by other launches.
  const float* offset_terms = nullptr;
  int64_t offset_terms_stride = 0;  // even and >= kGemvMaxBatch when offset_terms is set
};

// The launch shape of LaunchScalarCodecGemv(Group): one thread block per 16-row tile of every
// entry, `warps` warps per block splitting the columns. warps is the largest (≤ 8, ≤ the row's
// 512-column super-chunks) ≥ 2 for which every block is resident at once on `multiprocessors` SMs
// (16 warps per SM at the kernel's 128 registers); when none is, at batch ≤ 4, 4 (≤ the
// super-chunks): several waves of 4-warp blocks measured faster than one wave of one-warp blocks
// streaming whole rows; at batch 5-8, that one wave (W = 1) (docs/KERNELS.md, "Launch shape").
// Params must be valid.
struct GemvLaunchPlan {
  int64_t tiles = 0;
  int warps = 0;
};
GemvLaunchPlan PlanScalarCodecGemv(absl::Span<const ScalarCodecGemvParams> group,
                                   int multiprocessors);

// Fills the weight fields from `layout` and a device copy of the whole blob (codes then scales).
ScalarCodecGemvParams MakeGemvParams(const ScalarCodecLayout& layout, const void* device_blob);

// Whether the kernel runs these params on compute capability `sm`: sm_80 or newer (mma.sync with
// fp32 accumulation), K 1..8, batch 1..8, cols <= kGemvMaxCols, 16-byte aligned codes, x and
// x_stride, and 2-byte aligned scales.
bool IsSupported(int sm, const ScalarCodecGemvParams& params);

// The same for a grouped launch: every entry supported, 1..kGemvMaxGroup entries, and all entries
// sharing cols, batch, x and x_stride.
bool IsSupported(int sm, absl::Span<const ScalarCodecGemvParams> group);

// y[b][r] = Σ_c W'[r][c]·x[b][c] for b < batch, r < rows. INVALID_ARGUMENT when the params are
// inconsistent or misaligned (it checks everything IsSupported does except `sm`); INTERNAL for a
// CUDA launch error.
absl::Status LaunchScalarCodecGemv(const ScalarCodecGemvParams& params, cudaStream_t stream);

// Every entry's y = W'·x in one launch. The entries share cols, batch, x and x_stride (one rotated
// activation); each has its own weight (any K and group size), rows, y and y_stride. Entries must
// write disjoint elements of y (separate buffers, or row slices of one fused output). The kernel
// is specialised for the range of K in the group, so a group of equal K runs exactly the
// single-matrix code. INVALID_ARGUMENT naming the entry and the field; INTERNAL for a launch error.
absl::Status LaunchScalarCodecGemvGroup(absl::Span<const ScalarCodecGemvParams> group,
                                        cudaStream_t stream);

// How the weights reach the tensor cores. kRegisters: each warp loads its codes straight into
// registers, one super-chunk ahead (any SM from sm_80). kStreamed (sm_90): one wave of
// persistent blocks streams its row tiles through a ring of shared-memory stages with bulk
// copies, from kernel start and across tiles, and the block's 8 warps decode from there.
// kAuto: with SetStreamedGemv on, PreferStreamedGemv on sm_90 and up; else kRegisters.
enum class GemvPipeline { kAuto, kRegisters, kStreamed };

// Knobs of the launch that change only its speed, never its result; benchmarks sweep them.
struct GemvTuning {
  // Warps per block of the register pipeline, 1..8; 0 = PlanScalarCodecGemv's choice (and with
  // kAuto, the pipeline's choice too). For tiled weights (which ignore `pipeline`): 1, 2, 4, 8 or
  // 16, 0 = PlanTiledGemv's.
  int warps_per_block = 0;
  GemvPipeline pipeline = GemvPipeline::kAuto;
};

// Whether kAuto streams this (validated) group on an sm_90 device.
bool PreferStreamedGemv(absl::Span<const ScalarCodecGemvParams> group);

// Process-wide: whether kAuto may pick the streamed pipeline at all. Default off: back to back
// the kernel is faster on the shapes PreferStreamedGemv names, but inside the 8B decode step it is
// slower with dependent launch on (H200: 3.295 → 3.467 ms per batch-1 step; without dependent
// launch 3.398 → 3.386): its shared memory leaves the register GEMVs after it a small L1
// (docs/KERNELS.md "Streamed pipeline"). `bitloom bench --streamed_gemv` turns it on for A/B runs.
void SetStreamedGemv(bool enabled);
bool StreamedGemvEnabled();

// The same with the tuning forced. INVALID_ARGUMENT names a knob out of range.
absl::Status LaunchScalarCodecGemvGroup(absl::Span<const ScalarCodecGemvParams> group,
                                        const GemvTuning& tuning, cudaStream_t stream);

// Widths a rotating launch takes: powers of two whose transform fits the block's shared memory
// (fp32 work row + fp16 row: 6·n bytes).
inline constexpr int64_t kGemvRotateMinCols = 512;
inline constexpr int64_t kGemvRotateMaxCols = 8192;

// Widest rows PreferRotatingGemv recommends: every resident block redoes the transform, and its
// shared-memory passes grow with n while the weight bytes per block do not. Measured on the H200
// (engine step, same lease): Llama-3-8B's 4096-wide q/k/v and o_proj 3.378 → 3.325 ms per step;
// Llama-3-70B's 8192-wide o_proj 17.62 → 19.14 ms, i.e. 19 µs per layer slower.
inline constexpr int64_t kGemvRotatePreferMaxCols = 4096;

// The input a rotating launch rotates (one row). Every pointer is device memory holding n = cols
// fp32 elements, 16-byte aligned.
struct GemvRotatingInput {
  // R: base order 1 and n = the group's cols, a power of two in [kGemvRotateMinCols,
  // kGemvRotateMaxCols] (DescribeRotation of the layer's HadamardRotation).
  RotationDesc rotation;
  // Plain input x, or (x null) the residual input of LaunchHadamardRotate's norm (its strides are
  // not read): r = residual + delta, normalised, rotated.
  const float* x = nullptr;
  RotateNormInput norm;
  // Norm input: receives r. Every block reads residual and delta, so the update cannot go back in
  // place; it must not overlap them (the caller alternates two residual buffers).
  float* residual_out = nullptr;
};

// y = W'·(R·input) for every entry, batch 1, in one launch; the entries' x and x_stride are not
// read. Results equal LaunchHadamardRotate (fp16 out) followed by LaunchScalarCodecGemvGroup, up to
// the one-ulp difference in 1/rms that the order of the Σr² sum may make. INVALID_ARGUMENT naming
// the entry or field (batch other than 1, a rotation that is not the plain power-of-two transform
// of cols, x and norm.residual both or neither set, misalignment, residual_out overlapping its
// inputs); INTERNAL for a launch error.
absl::Status LaunchScalarCodecGemvGroupRotating(absl::Span<const ScalarCodecGemvParams> group,
                                                const GemvRotatingInput& input,
                                                cudaStream_t stream);

// Whether the current device should run `group` on `input` with the rotating launch: the launch
// is valid, cols <= kGemvRotatePreferMaxCols, every one of its thread blocks is resident at once
// (one wave, so no block waits for another's transform), and the group's K do not need the mixed
// [1, 8] kernel (which spills with the transform's registers). False on any CUDA error (the caller then rotates separately).
bool PreferRotatingGemv(absl::Span<const ScalarCodecGemvParams> group,
                        const GemvRotatingInput& input);

}  // namespace bitloom::kernels::cuda
