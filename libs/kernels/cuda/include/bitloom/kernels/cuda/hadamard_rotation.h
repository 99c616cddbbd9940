// The randomized Hadamard rotation x' = R·x of CODEC_HADAMARD_SCALAR on the GPU, for a small batch
// of activation rows (decode: 1-8). It is the same R as the CPU's HadamardRotation
// (kernels/hadamard.h): signs from SplitMix64(seed) regenerated on the device (nothing of size n is
// uploaded), the Walsh–Hadamard transform of each length-L segment in the CPU's butterfly order,
// then the p×p Paley (or identity) base matrix mixing the segments, then the 1/√(p·L) scale. In fp32
// the arithmetic is the CPU's operation for operation, so an fp32 output matches Apply() to the bit.
//
// The output is written with a row stride of its own and zero-filled from n to that stride, which
// is what the scalar-codec GEMV needs (its code blocks are 32 columns and the columns past
// in_features must meet x' = 0). The usual output is fp16 into the GEMV's activation workspace.
//
// The input may instead be a gated MLP's two halves (`up` set): the rotation then reads x as the
// gate and rotates act(gate) · up, computed with LaunchGatedActivation's operations, so the result
// equals that kernel followed by this one bit for bit while the activation never goes through
// memory: one kernel and one round trip of the intermediate vector less per down projection.
//
// Or the input may be a decoder layer's residual stream (`norm.residual` set): the rotation then
// does LaunchResidualRmsNorm's work in front, residual += delta written back, and rotates the
// normalised row. R is linear, so the row's 1/rms is applied after the transform (its sum of
// squares is reduced across the cluster while the butterflies run); the result agrees with
// norm-then-rotate to a few fp32 ulps, not bit for bit.
//
// Or the input may be decode attention's per-split partials (`splits` set, from a launch with
// defer_combine): row b is sequence b's attention output, merged as it is loaded with the combine
// kernel's arithmetic, so the result equals combine-then-rotate bit for bit (register-tiled schedule
// only).
//
// Two schedules (docs/KERNELS.md, "Rotation"). The register-tiled one covers every width whose L
// is at least 16 and whose p is 1 or one of the Paley orders 12, 20, 28, 36, 60 (all the real model
// widths): each thread holds 16 elements and does 4 butterfly stages in registers per pass, and a
// row may be spread over a thread-block cluster of up to 8 blocks (sm_90). Every other shape runs
// the one-block-per-row schedule. Both are bit-exact; which one runs never changes the result.
//
// Ownership: the caller owns every device buffer, including the base matrix, which it uploads once
// per width from HadamardRotation::base_matrix() (p·p int8, only when p > 1). The launcher is
// asynchronous on `stream`, allocates nothing, never synchronises and never logs; it is thread-safe.
// Plain C++ (no CUDA compiler needed to include this header).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/kernels/activations.h"
#include "bitloom/kernels/cuda/attention_splits.h"
#include "bitloom/kernels/hadamard.h"

namespace bitloom::kernels::cuda {

enum class ActivationType : uint8_t { kF32 = 0, kF16 = 1 };  // fp16 = IEEE binary16 bits

// A residual RMSNorm in front of the rotation (see the file comment). The rotated row is
// (r · inv_rms) ⊙ (weight + weight_offset) with r = residual + delta and inv_rms =
// 1/√(mean(r²) + eps), Σr² accumulated in double as LaunchResidualRmsNorm does.
struct RotateNormInput {
  float* residual = nullptr;      // device [batch, residual_stride] fp32, updated in place
  int64_t residual_stride = 0;    // elements, >= n
  const float* delta = nullptr;   // device [batch, delta_stride] fp32, or null (no add)
  int64_t delta_stride = 0;       // elements, >= n when delta is set
  const float* weight = nullptr;  // device [n] fp32
  float weight_offset = 0.0f;     // Gemma's (1 + w): 1
  float eps = 0.0f;
};

// R described by value for the device. Built from the host rotation by DescribeRotation().
struct RotationDesc {
  int64_t n = 0;                  // width (in_features)
  uint64_t seed = 0;              // SplitMix64 seed of the signs
  int64_t base_order = 1;         // p
  int64_t pow2_order = 1;         // L (n = p·L)
  bool base_is_hadamard = false;  // false: B = I (block-diagonal fallback)
  float norm = 1.0f;              // 1/√(p·L), or 1/√L when B = I; the CPU's value rounded to fp32
  const int8_t* base = nullptr;   // device [p, p] row-major ±1; may be null when p == 1
};

// `device_base` is the caller's device copy of rotation.base_matrix() (null allowed when p == 1).
RotationDesc DescribeRotation(const HadamardRotation& rotation, const int8_t* device_base);

// kAuto: the register-tiled schedule where it covers the shape, else one block per row.
enum class RotateSchedule : uint8_t { kAuto = 0, kRowPerBlock = 1, kRegisterTiled = 2 };

struct HadamardRotateParams {
  RotationDesc rotation;
  const void* x = nullptr;  // device [batch, x_stride] of x_type, model (unrotated) space
  ActivationType x_type = ActivationType::kF32;
  int64_t x_stride = 0;  // elements, >= n
  void* out = nullptr;   // device [batch, out_stride] of out_type; must not alias x
  ActivationType out_type = ActivationType::kF16;
  int64_t out_stride = 0;  // elements, >= n; columns [n, out_stride) are written with zeros
  int batch = 0;           // rows, 1..kMaxRotateBatch
  // Gated input: null for plain x; else x is the gate (x_type kF32) and R·(act(x) · up) is formed.
  const float* up = nullptr;  // device [batch, up_stride] fp32
  int64_t up_stride = 0;      // elements, >= n
  Activation activation = Activation::kSilu;
  // Residual RMSNorm input: with norm.residual set, x must be null (the residual is the input).
  RotateNormInput norm;
  // Attention input: with splits.acc set, x, up and norm.residual must be null and
  // x_type kF32; row b merges the partials of sequence b (n = num_heads·head_dim). Needs the
  // register-tiled schedule; with cluster_blocks 0 the row goes over the most blocks that split it.
  DecodeAttentionSplits splits;
  // The tiled GEMV's offset terms of the rotated rows (scalar_codec_tiled.h, TiledOffsetTerms), or
  // null: for row b, 128-column group G and K = 2, 3 (k = 0, 1), offset_terms[(k·n/128 + G)·
  // offset_terms_stride + b] = Σ over the group's columns of (1024·2^(−K·c) + centre_K)·x, x the fp16
  // outputs and c the column's class at K. Needs out_type kF16, n a multiple of 128, and out 8-byte
  // aligned with out_stride a multiple of 4; read back from the stored row, so the GEMV that takes
  // them skips its activation-sum mma.
  float* offset_terms = nullptr;
  int64_t offset_terms_stride = 0;  // >= batch
  // Left at their defaults the launcher picks; tests and benchmarks force a schedule with them.
  RotateSchedule schedule = RotateSchedule::kAuto;
  int cluster_blocks = 0;  // register-tiled only: thread blocks per row, 1..8 (> 1: a cluster,
                           // sm_90+); 0: the launcher's choice (about 2048 elements per block at
                           // decode batches, n/512 capped at 8 blocks from n = 4096; from kWholeRowBatch rows on, the fewest blocks per
                           // row whose shared memory fits: enough rows fill the GPU without
                           // splitting them)
};

// Rows per launch: a whole prefill chunk in one grid (rows × at most 8 cluster blocks stays far
// inside the 2^31 − 1 blocks of grid.x).
inline constexpr int kMaxRotateBatch = 65536;
// From this many rows the launcher keeps rows whole (see cluster_blocks): at 2048 rows on the H100
// one block per row beat the decode split by 12% at n = 4096 and 22% at n = 14336.
inline constexpr int kWholeRowBatch = 256;

// How LaunchHadamardRotate would run `params` on a device of compute capability `sm`.
struct RotateLaunchInfo {
  RotateSchedule schedule = RotateSchedule::kRowPerBlock;
  int cluster_blocks = 1;    // thread blocks per row
  int threads = 0;           // per block
  int64_t shared_bytes = 0;  // dynamic shared memory per block
};

// INVALID_ARGUMENT as LaunchHadamardRotate, or when a forced schedule / cluster size cannot run
// these params on `sm`.
absl::StatusOr<RotateLaunchInfo> PlanHadamardRotate(int sm, const HadamardRotateParams& params);

// Whether the kernels can run these params on a device of compute capability `sm` (e.g. 90): the
// one-block-per-row schedule keeps the row in shared memory, so n·4 + p·p bytes must fit the
// device's per-block limit (227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86/89: n up to 57344
// on H100); the register-tiled one needs about 8·n / cluster_blocks bytes per block.
bool IsSupported(int sm, const HadamardRotateParams& params);

// out[b] = R·x[b] (or R·(act(x[b]) · up[b]), or R·RmsNorm(residual[b] + delta[b])) for b < batch,
// zero-padded to out_stride.
// INVALID_ARGUMENT for null pointers, strides < n, batch outside 1..kMaxRotateBatch, p·L != n, a
// missing base matrix, a gated input with fp16 x, a norm input with x or up also set or a null
// weight, an attention input with another input set or a shape that does not give n, or with a
// schedule other than the register-tiled one, or a forced schedule that cannot run the shape; INTERNAL for a CUDA launch error. Rows too wide for shared
// memory fail at launch (check IsSupported first). The first launch on each device queries its
// compute capability once (cached).
absl::Status LaunchHadamardRotate(const HadamardRotateParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
