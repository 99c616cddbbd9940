#include "bitloom/engine/artifact_weight_source.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/codec_layout.h"

namespace bitloom::engine {
namespace {

// Blobs are little-endian (FORMAT.md) and so is every host Bitloom builds for; memcpy per element
// keeps the loads free of alignment and aliasing assumptions.
template <typename Word, typename Convert>
void Decode(const uint8_t* bytes, uint64_t count, float* out, Convert convert) {
  for (uint64_t i = 0; i < count; ++i) {
    Word w;
    std::memcpy(&w, bytes + i * sizeof(Word), sizeof(Word));
    out[i] = convert(w);
  }
}

}  // namespace

bool ArtifactWeightSource::Contains(const std::string& name) const {
  return reader_.FindTensor(name) != nullptr;
}

absl::StatusOr<WeightTensor> ArtifactWeightSource::Read(const std::string& name) const {
  const v1::TensorEntry* entry = reader_.FindTensor(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", name, " not found in artifact ", reader_.path()));
  }
  const v1::Codec codec = entry->codec();
  if (codec != v1::CODEC_F32 && codec != v1::CODEC_F16 && codec != v1::CODEC_BF16) {
    return absl::UnimplementedError(absl::StrCat("tensor ", name, ": codec ", modelstore::CodecName(codec),
                                                 " cannot be decoded by the CPU engine yet (f32, f16 and "
                                                 "bf16 can)"));
  }
  WeightTensor tensor;
  tensor.shape.assign(entry->shape().begin(), entry->shape().end());
  BITLOOM_ASSIGN_OR_RETURN(const uint64_t count, modelstore::ElementCount(tensor.shape));
  BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, reader_.TensorBytes(name));
  const uint64_t element_size = modelstore::DenseElementSize(codec);
  if (bytes.size() != count * element_size) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": blob of ", bytes.size(), " bytes for ", count,
                                            " elements of ", element_size, " bytes"));
  }
  tensor.data.resize(count);
  switch (codec) {
    case v1::CODEC_F32:
      std::memcpy(tensor.data.data(), bytes.data(), bytes.size());
      break;
    case v1::CODEC_F16:
      Decode<uint16_t>(bytes.data(), count, tensor.data.data(), [](uint16_t h) { return F16ToF32(h); });
      break;
    default:  // CODEC_BF16, the only other codec let through above
      Decode<uint16_t>(bytes.data(), count, tensor.data.data(), [](uint16_t h) { return Bf16ToF32(h); });
      break;
  }
  return tensor;
}

}  // namespace bitloom::engine
