#include "bitloom/modelstore/codec_layout.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitloom::modelstore {

uint64_t DenseElementSize(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_F32:
      return 4;
    case v1::CODEC_F16:
      return 2;
    case v1::CODEC_BF16:
      return 2;
    default:
      return 0;
  }
}

absl::StatusOr<uint64_t> ElementCount(absl::Span<const uint64_t> shape) {
  uint64_t count = 1;
  for (uint64_t dim : shape) {
    if (dim != 0 && count > UINT64_MAX / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape [", absl::StrJoin(shape, ", "), "] has more than 2^64 elements"));
    }
    count *= dim;
  }
  return count;
}

absl::StatusOr<uint64_t> ExpectedBlobSize(v1::Codec codec, absl::Span<const uint64_t> shape) {
  if (codec == v1::CODEC_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "codec is CODEC_UNSPECIFIED; every tensor must name its codec");
  }
  const uint64_t element_size = DenseElementSize(codec);
  if (element_size == 0) {
    return absl::UnimplementedError(absl::StrCat("the blob size of codec ", CodecName(codec),
                                                 " is not determined by its shape alone"));
  }
  absl::StatusOr<uint64_t> count = ElementCount(shape);
  if (!count.ok() || *count > UINT64_MAX / element_size) {
    return absl::InvalidArgumentError(absl::StrCat("shape [", absl::StrJoin(shape, ", "), "] of ",
                                                   CodecName(codec),
                                                   " elements needs more than 2^64 bytes"));
  }
  return *count * element_size;
}

std::string CodecName(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_UNSPECIFIED:
      return "unspecified";
    case v1::CODEC_F32:
      return "f32";
    case v1::CODEC_F16:
      return "f16";
    case v1::CODEC_BF16:
      return "bf16";
    case v1::CODEC_HADAMARD_SCALAR:
      return "hadamard_scalar";
    case v1::CODEC_TRELLIS:
      return "trellis";
    default:
      return absl::StrCat("codec#", static_cast<int>(codec));
  }
}

}  // namespace bitloom::modelstore
