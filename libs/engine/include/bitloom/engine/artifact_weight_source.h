// ArtifactWeightSource: the CPU engine's weights read from a Bitloom artifact (docs/FORMAT.md).
//
// Each Read() decodes one tensor blob of the memory-mapped artifact to a fresh fp32 vector, so the
// engine owns plain fp32 copies and the mapping is only touched while loading. Decoded codecs:
// - F32, F16, BF16: element by element.
// - CODEC_HADAMARD_SCALAR (docs/QUANTIZATION.md section 2): the blob holds W' = W·Rᵀ in rotated
//   space; Read() dequantizes W' (kernels::DequantizeScalarCodec) and undoes the input-side
//   rotation, W = W'·R (each row r ← Rᵀ·r), with R rebuilt from the entry's `rotation_seed` param
//   and checked against its `rotation` description. The result is the weight in the model's basis,
//   so the engine runs a quantized artifact with its ordinary fp32 matmuls: exact up to fp32
//   rounding of the rotation (~1e-7 relative), the CPU oracle of what the quantized kernels compute.
// Any other codec is UNIMPLEMENTED naming the tensor and the codec, so an artifact the CPU engine
// cannot decode fails to load with a clear message rather than being misread. The reader is not
// owned and must outlive this object; the ThreadPool (may be null) parallelises the decode of
// large quantized tensors and must outlive it too.
// Thread-safe: the reader is immutable and Read() keeps no state.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/modelstore/artifact_reader.h"

namespace bitloom::engine {

class ArtifactWeightSource : public WeightSource {
 public:
  explicit ArtifactWeightSource(const modelstore::ArtifactReader& reader, ThreadPool* pool = nullptr)
      : reader_(reader), pool_(pool) {}

  bool Contains(const std::string& name) const override;
  // NOT_FOUND for an absent tensor, UNIMPLEMENTED for a codec the CPU engine cannot decode,
  // DATA_LOSS when the blob's size does not match its shape and codec settings (the reader checks
  // dense sizes too), or when a quantized tensor's rotation params are missing, malformed or
  // describe a different rotation than the seed builds.
  absl::StatusOr<WeightTensor> Read(const std::string& name) const override;

 private:
  absl::StatusOr<WeightTensor> ReadHadamardScalar(const v1::TensorEntry& entry,
                                                  absl::Span<const uint8_t> bytes) const;

  const modelstore::ArtifactReader& reader_;
  ThreadPool* pool_;
};

}  // namespace bitloom::engine
