// The packed layout of CODEC_HADAMARD_SCALAR, defined once for the encoder (libs/quant), the CPU
// reference ops below and the CUDA kernels; docs/QUANTIZATION.md has the byte diagram.
//
// A weight W [rows = out_features, cols = in_features] is stored *in rotated space*: the encoder
// quantizes W' = W·Rᵀ where R is the HadamardRotation of the input dimension (hadamard.h), and
// inference computes y = W'·(R·x). Each row is cut into groups of `group_size` columns (a multiple
// of 32, default 128; the last group of a row may be partial) with one fp16 scale per group, and
// every weight is a K-bit code q (K = 1..8) on a symmetric, zero-free grid:
//
//     w = scale · (q − (2^K − 1)/2)          q ∈ [0, 2^K − 1]
//
// Symmetric, because after the randomized Hadamard rotation every row is close to iid zero-mean
// Gaussian: an offset per group would cost another 16 bits per group (+0.125 bits per weight at
// group 128, 6% of a 2-bit budget) and an extra operation per weight in the GEMV for almost no
// gain. Midpoint levels (±½, ±1½, ...) use all 2^K codes symmetrically; a signed-integer grid would
// waste a level or be lopsided, which matters most at K = 2.
//
// Blob = codes section, then scales section:
//   codes:  rows × row_stride_words uint32. Row r is ceil(cols/32) *code blocks*; block b holds the
//   32
//           codes of columns [32b, 32b+32) in K consecutive little-endian uint32 words, as one
//           LSB-first bit stream (code i occupies stream bits [iK, iK+K), so for K ∉ {1,2,4,8} a
//           code may straddle two words). Columns ≥ cols in the last block are code 0 and must be
//           multiplied by x = 0 (the rotated-activation workspace is zero-padded). The row stride
//           is rounded up to a multiple of 4 words so every row starts 16-byte aligned and a warp
//           can read it with 128-bit loads; for cols % 128 == 0 (most real shapes) the rounding
//           adds nothing.
//   scales: rows × groups_per_row fp16 (IEEE binary16 bits), row-major, starting at codes_bytes
//           (a multiple of 16).
//
// Why this code packing: a GPU thread that owns a code block loads its K words (for group 128 a
// group is exactly K uint4 loads) and, with K a compile-time constant and the 32 codes unrolled,
// every code's word index and shift are constants: one funnel shift and one mask per code, no
// table, no divergence. Bit-plane packing (word b = bit b of 32 codes) would cost K shift/mask
// pairs per code instead.
//
// Everything in this header is header-only arithmetic usable from CUDA (BITLOOM_HOST_DEVICE); the
// functions that touch memory at the bottom are the CPU reference and are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"

#if defined(__CUDACC__)
#define BITLOOM_HOST_DEVICE __host__ __device__
#else
#define BITLOOM_HOST_DEVICE
#endif

namespace bitloom::kernels {

class HadamardRotation;

inline constexpr int kScalarCodesPerBlock = 32;  // codes per code block
inline constexpr int kScalarMinBits = 1;
inline constexpr int kScalarMaxBits = 8;
inline constexpr int kScalarDefaultGroupSize = 128;
inline constexpr int kScalarRowAlignWords = 4;  // 16-byte row alignment
inline constexpr int kScalarMaxGroupSize = 1 << 16;

// TensorEntry.params keys written by the encoder and read by inferd.
inline constexpr char kScalarParamRotation[] = "rotation";           // HadamardRotation::Describe()
inline constexpr char kScalarParamRotationSeed[] = "rotation_seed";  // decimal uint64

// One code block of K-bit codes: the unit a GPU thread decodes. Its size is part of the format.
template <int K>
struct ScalarCodeBlock {
  static_assert(K >= kScalarMinBits && K <= kScalarMaxBits, "K must be 1..8");
  uint32_t words[K];
};
static_assert(sizeof(ScalarCodeBlock<1>) == 4);
static_assert(sizeof(ScalarCodeBlock<2>) == 8);
static_assert(sizeof(ScalarCodeBlock<3>) == 12);
static_assert(sizeof(ScalarCodeBlock<4>) == 16);
static_assert(sizeof(ScalarCodeBlock<8>) == 32);

// Offset of the symmetric grid: level(q) = q − ScalarGridCenter(K). Exact in fp32 and fp16.
BITLOOM_HOST_DEVICE constexpr float ScalarGridCenter(int bits) {
  return 0.5f * static_cast<float>((1 << bits) - 1);
}

// Code i (0..31) of a code block with `bits`-bit codes.
BITLOOM_HOST_DEVICE inline uint32_t ScalarCodeAt(const uint32_t* words, int bits, int i) {
  const int bit = i * bits;
  const int w = bit >> 5;
  const int shift = bit & 31;
  uint64_t pair = words[w];
  if (shift + bits > 32) pair |= static_cast<uint64_t>(words[w + 1]) << 32;
  return static_cast<uint32_t>(pair >> shift) & ((1u << bits) - 1u);
}

// Where everything lives in a blob, from (rows, cols, bits, group_size). All sizes in the named
// unit.
struct ScalarCodecLayout {
  int64_t rows = 0;              // out_features
  int64_t cols = 0;              // in_features
  int bits = 0;                  // K, 1..8
  int group_size = 0;            // columns per scale, multiple of 32
  int64_t blocks_per_row = 0;    // ceil(cols / 32)
  int64_t groups_per_row = 0;    // ceil(cols / group_size)
  int64_t row_stride_words = 0;  // uint32 words per row in the codes section (16-byte multiple)
  int64_t codes_bytes = 0;       // rows · row_stride_words · 4
  int64_t scales_offset = 0;     // == codes_bytes
  int64_t scales_bytes = 0;      // rows · groups_per_row · 2
  int64_t total_bytes = 0;       // blob size

  // Stored bits per logical weight, codes + scales + padding: what bit allocation counts.
  double BitsPerWeight() const {
    return rows * cols == 0
               ? 0.0
               : 8.0 * static_cast<double>(total_bytes) / static_cast<double>(rows * cols);
  }
};

// INVALID_ARGUMENT naming the field for bits outside 1..8, a group size that is not a positive
// multiple of 32 (up to 65536), or a non-positive dimension.
absl::StatusOr<ScalarCodecLayout> MakeScalarCodecLayout(int64_t rows, int64_t cols, int bits,
                                                        int group_size = kScalarDefaultGroupSize);

// Writes codes [rows, cols] (each < 2^bits; larger values are an error) and scales
// [rows, groups_per_row] (fp16 bits) into a new blob of layout.total_bytes.
absl::StatusOr<std::vector<uint8_t>> PackScalarCodec(const ScalarCodecLayout& layout,
                                                     absl::Span<const uint8_t> codes,
                                                     absl::Span<const uint16_t> scales);

// The inverse of PackScalarCodec. INVALID_ARGUMENT when the blob size does not match the layout.
absl::Status UnpackScalarCodec(const ScalarCodecLayout& layout, absl::Span<const uint8_t> blob,
                               std::vector<uint8_t>* codes, std::vector<uint16_t>* scales);

// W' [rows, cols] fp32 in rotated space: w = scale · (q − center), computed in fp32 exactly so.
absl::Status DequantizeScalarCodec(const ScalarCodecLayout& layout, absl::Span<const uint8_t> blob,
                                   float* w, ThreadPool* pool);

struct ScalarCodecGemvParams {
  const ScalarCodecLayout* layout = nullptr;
  absl::Span<const uint8_t> blob;              // the packed weight
  const HadamardRotation* rotation = nullptr;  // of size layout->cols; null: x is already rotated
  const float* x = nullptr;  // [batch, cols] activations in the model's (unrotated) space
  float* y = nullptr;        // [batch, rows]; must not alias x
  int64_t batch = 0;
};

// The CPU reference of the quantized linear layer: y_b = W'·(R·x_b) for every b. Each output is a
// fixed-order fp32 dot product (like MatmulF32) of the dequantized row and the rotated x, so it is
// bit-identical to DequantizeScalarCodec + rotation + MatmulF32 and independent of batch and
// threads.
absl::Status ScalarCodecGemv(const ScalarCodecGemvParams& params, ThreadPool* pool);

}  // namespace bitloom::kernels
