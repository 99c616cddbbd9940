// CPU dequantization of GGUF tensor data to fp32: the reference decoder for every type in
// gguf_blocks.h that Bitloom reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K .. Q6_K).
//
// The arithmetic follows the order of operations of the block formula in docs/GGUF.md (for example
// Q4_K is (d * sc) * q - (dmin * m)), in fp32 with no fused multiply-add, so results are bit-identical
// to the `gguf` Python package's dequantizer, which the golden test checks. Stateless and thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "bitloom/formats/gguf_blocks.h"

namespace bitloom::formats {

// Bytes that `num_values` weights of `type` occupy. INVALID_ARGUMENT when the type is unknown or
// `num_values` is not a whole number of blocks; OUT_OF_RANGE on overflow.
absl::Status GgmlByteSize(GgmlType type, uint64_t num_values, uint64_t* bytes);

// Decodes `src` (a whole number of blocks of `type`) into `dst`, whose size must be exactly the
// number of weights `src` holds. UNIMPLEMENTED for a type we cannot decode, INVALID_ARGUMENT on a
// size mismatch. `src` need not be aligned.
absl::Status DequantizeGguf(GgmlType type, absl::Span<const uint8_t> src, absl::Span<float> dst);

}  // namespace bitloom::formats
