// ArtifactWeightSource: the CPU engine's weights read from a Bitloom artifact (docs/FORMAT.md).
//
// Each Read() decodes one tensor blob of the memory-mapped artifact to a fresh fp32 vector, so the
// engine owns plain fp32 copies and the mapping is only touched while loading. The dense codecs
// (F32, F16, BF16) are decoded here; a quantized codec is UNIMPLEMENTED naming the tensor and the
// codec until the quantizer's CPU decoders exist, so a quantized artifact fails to load with a clear
// message rather than being misread. The reader is not owned and must outlive this object.
// Thread-safe: the reader is immutable and Read() keeps no state.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/modelstore/artifact_reader.h"

namespace bitloom::engine {

class ArtifactWeightSource : public WeightSource {
 public:
  explicit ArtifactWeightSource(const modelstore::ArtifactReader& reader) : reader_(reader) {}

  bool Contains(const std::string& name) const override;
  // NOT_FOUND for an absent tensor, UNIMPLEMENTED for a codec the CPU engine cannot decode,
  // DATA_LOSS when the blob's size does not match its shape (the reader checks this too).
  absl::StatusOr<WeightTensor> Read(const std::string& name) const override;

 private:
  const modelstore::ArtifactReader& reader_;
};

}  // namespace bitloom::engine
