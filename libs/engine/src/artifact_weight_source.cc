#include "bitloom/engine/artifact_weight_source.h"

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
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
  if (codec == v1::CODEC_HADAMARD_SCALAR) {
    BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, reader_.TensorBytes(name));
    return ReadHadamardScalar(*entry, bytes);
  }
  if (codec != v1::CODEC_F32 && codec != v1::CODEC_F16 && codec != v1::CODEC_BF16) {
    return absl::UnimplementedError(absl::StrCat("tensor ", name, ": codec ", modelstore::CodecName(codec),
                                                 " cannot be decoded by the CPU engine (f32, f16, bf16 and "
                                                 "hadamard_scalar can)"));
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

absl::StatusOr<WeightTensor> ArtifactWeightSource::ReadHadamardScalar(const v1::TensorEntry& entry,
                                                                      absl::Span<const uint8_t> bytes) const {
  const std::string& name = entry.name();
  if (entry.shape_size() != 2) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": hadamard_scalar needs a 2-D shape [out, in], got ",
                                            entry.shape_size(), " dimensions"));
  }
  // bits_per_weight is the integer code width K for this codec (QUANTIZATION.md section 2).
  const float bits_field = entry.bits_per_weight();
  const int bits = static_cast<int>(bits_field);
  if (static_cast<float>(bits) != bits_field) {
    return absl::DataLossError(
        absl::StrCat("tensor ", name, ": bits_per_weight ", bits_field, " is not an integer code width"));
  }
  const uint64_t rows = entry.shape(0);
  const uint64_t cols = entry.shape(1);
  constexpr uint64_t kMaxDim = uint64_t{1} << 31;
  if (rows == 0 || cols == 0 || rows >= kMaxDim || cols >= kMaxDim) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": shape [", rows, ", ", cols, "] is out of range"));
  }
  auto layout = kernels::MakeScalarCodecLayout(static_cast<int64_t>(rows), static_cast<int64_t>(cols), bits,
                                               static_cast<int>(entry.group_size()));
  if (!layout.ok()) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": ", layout.status().message()));
  }
  if (bytes.size() != static_cast<uint64_t>(layout->total_bytes)) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": blob of ", bytes.size(), " bytes, the ", bits,
                                            "-bit layout with group ", entry.group_size(), " needs ",
                                            layout->total_bytes));
  }

  // The rotation: both params are required; the description guards against a reader that would build
  // a different R from the same seed (a changed construction), which would silently scramble W.
  const auto seed_it = entry.params().find(kernels::kScalarParamRotationSeed);
  const auto desc_it = entry.params().find(kernels::kScalarParamRotation);
  if (seed_it == entry.params().end() || desc_it == entry.params().end()) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": hadamard_scalar needs params '",
                                            kernels::kScalarParamRotation, "' and '",
                                            kernels::kScalarParamRotationSeed, "'"));
  }
  uint64_t seed = 0;
  if (!absl::SimpleAtoi(seed_it->second, &seed)) {
    return absl::DataLossError(
        absl::StrCat("tensor ", name, ": rotation_seed '", seed_it->second, "' is not a decimal u64"));
  }
  BITLOOM_ASSIGN_OR_RETURN(const kernels::HadamardRotation rotation,
                           kernels::HadamardRotation::Create(static_cast<int64_t>(cols), seed));
  if (rotation.Describe() != desc_it->second) {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": rotation '", desc_it->second, "' but seed ",
                                            seed, " of size ", cols, " builds '", rotation.Describe(), "'"));
  }

  WeightTensor tensor;
  tensor.shape = {rows, cols};
  tensor.data.resize(rows * cols);
  BITLOOM_RETURN_IF_ERROR(kernels::DequantizeScalarCodec(*layout, bytes, tensor.data.data(), pool_));
  // Stored rows are r' = R·r (W' = W·Rᵀ); Rᵀ undoes R exactly up to fp32 rounding.
  rotation.ApplyTranspose(tensor.data.data(), static_cast<int64_t>(rows), pool_);
  return tensor;
}

}  // namespace bitloom::engine
