// Dequantization of a CODEC_HADAMARD_SCALAR weight to fp16 on the GPU: the first half of the
// prefill GEMM. A prefill chunk has hundreds of tokens, so the linear layers are matrix products, not
// GEMVs; the fastest path on the tools we have is to expand a slice of rows of W' (the rotated-space
// weight exactly as the artifact stores it, kernels/scalar_codec.h) into an fp16 buffer once per
// chunk and hand it to cuBLAS with the rotated fp16 activations (gpu_linear.cc). The expansion reads
// K/16 of the bytes it writes, so it costs about as much as one pass of the GEMM over the weight and
// pays for itself from a few dozen tokens on (docs/KERNELS.md, "Prefill GEMM").
//
// Output: out[r − row_begin][c] = fp16(s·(q − c0)) for rows [row_begin, row_begin + row_count) and
// columns [0, blocks_per_row·32), computed in fp32 and rounded once (DequantizeScalarCodec's value,
// rounded to fp16). The padding columns of the last code block get their decoded value too (code
// 0 times the last group's scale): the rotated activations are zero there, so they add nothing.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`,
// allocates nothing, never synchronises and never logs; it is thread-safe. Plain C++ header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"

namespace bitloom::kernels::cuda {

struct ScalarCodecDequantParams {
  // The weight: only the weight fields of the GEMV params are read (MakeGemvParams fills them).
  ScalarCodecGemvParams weight;
  int64_t row_begin = 0;  // first row to expand
  int64_t row_count = 0;  // rows to expand, >= 1, row_begin + row_count <= weight.rows
  uint16_t* out = nullptr;  // device fp16 [row_count, out_stride], 16-byte aligned
  int64_t out_stride = 0;   // elements, >= blocks_per_row·32 and a multiple of 8
};

// INVALID_ARGUMENT naming the field for inconsistent, misaligned or out-of-range params; INTERNAL for
// a CUDA launch error.
absl::Status LaunchScalarCodecDequant(const ScalarCodecDequantParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
