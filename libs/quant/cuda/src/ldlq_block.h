// One LDLQ column block on the GPU: for every row of a stack of weights (one slab per code width),
// choose each group's fp16 scale, round columns [b0, b1) left to right with eager in-block error
// feedback, and emit the codes, the scales and the scaled errors e that the caller's lazy
// rank-(b1−b0) cuBLAS update then pushes onto the columns right of the block. The arithmetic per
// row is scalar_quantizer.cc's, operation for operation (see ldlq_block.cu). Launchers are
// asynchronous on `stream`, allocate nothing and never synchronise. Private; plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::quant::cuda::internal {

// Code widths one stacked pass can carry (K = 1..8, the whole measurement).
inline constexpr int kMaxStackedWidths = 8;
// The largest LDLQ block the kernel takes (block = group_size for groups ≥ 128).
inline constexpr int kMaxLdlqBlock = 512;

struct LdlqBlockParams {
  int64_t rows = 0;        // rows of one weight = rows of one slab
  int64_t total_rows = 0;  // slabs · rows
  int64_t cols = 0;        // in_features
  int group_size = 0;      // columns per scale (multiple of 32)
  int64_t groups_per_row = 0;
  int clip_steps = 16;     // ScalarQuantizerOptions::clip_steps
  double min_clip = 0.4;   // ScalarQuantizerOptions::min_clip
  int bits[kMaxStackedWidths] = {};  // code width of slab s (rows [s·rows, (s+1)·rows))
  int64_t block = 0;       // LDLQ block width (multiple of group_size), the stride of `err`
  int64_t b0 = 0, b1 = 0;  // this launch's columns, b1 − b0 ≤ block

  float* w = nullptr;              // device [total_rows, cols] error-updated weights; read in [b0, b1)
  const float* w_orig = nullptr;   // device [rows, cols] the weight as given (for Δ)
  const float* u = nullptr;        // device [cols, cols] fp32, row-major upper: Hd⁻¹ = UᵀU
  const double* damp_diag = nullptr;  // device [cols] (Hd − H)_ii, or null: no Δ² term
  uint8_t* codes = nullptr;        // device [total_rows, cols]
  uint16_t* scales = nullptr;      // device [total_rows, groups_per_row] fp16 bits
  float* err = nullptr;            // device [total_rows, block]: e of column b0 + t at [r, t]
  double* err_sq = nullptr;        // device [total_rows]: += Σ e² over the block
  double* damp_sq = nullptr;       // device [total_rows]: += Σ (Hd − H)_ii·Δ_i² over the block
};

// INVALID_ARGUMENT for inconsistent params (block > kMaxLdlqBlock, a width outside 1..8, ...).
absl::Status LaunchLdlqBlock(const LdlqBlockParams& p, cudaStream_t stream);

// The device twin of kernels::PackScalarCodec for one weight: codes [rows, cols] (each < 2^bits)
// and scales [rows, groups_per_row] into `blob` (device, total_bytes of the layout given by the
// sizes below). Zeroes the blob first (padding words and padding codes are 0, as on the host).
struct PackParams {
  int64_t rows = 0, cols = 0;
  int bits = 0;
  int64_t blocks_per_row = 0, groups_per_row = 0, row_stride_words = 0;
  int64_t scales_offset = 0, total_bytes = 0;
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
  uint8_t* blob = nullptr;
};
absl::Status LaunchPackScalarCodec(const PackParams& p, cudaStream_t stream);

}  // namespace bitloom::quant::cuda::internal
