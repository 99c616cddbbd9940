// Byte sizes of tensor blobs by codec, as docs/FORMAT.md lays them out.
//
// Pure functions, thread-safe. Codecs whose layout depends on more than the shape (the quantized
// codecs) are specified together with their encoder; until then ExpectedBlobSize reports them as
// UNIMPLEMENTED and the reader checks only their bounds, not their size.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::modelstore {

// Bytes per element of the dense codecs (F32, F16, BF16); 0 for every other codec.
uint64_t DenseElementSize(v1::Codec codec);

// The number of elements of `shape` (1 for a scalar, the empty shape). INVALID_ARGUMENT when the
// product does not fit in 64 bits.
absl::StatusOr<uint64_t> ElementCount(absl::Span<const uint64_t> shape);

// The exact blob size of a tensor with `codec` and `shape`:
// - F32, F16, BF16: element count times element size (INVALID_ARGUMENT on 64-bit overflow);
// - CODEC_UNSPECIFIED: INVALID_ARGUMENT (every tensor must name its codec);
// - any other codec, known or not: UNIMPLEMENTED (the size is not determined by the shape alone).
absl::StatusOr<uint64_t> ExpectedBlobSize(v1::Codec codec, absl::Span<const uint64_t> shape);

// "f32", "f16", "bf16", "hadamard_scalar", "trellis", "unspecified", or "codec#N" for an unknown
// value.
std::string CodecName(v1::Codec codec);

}  // namespace bitloom::modelstore
