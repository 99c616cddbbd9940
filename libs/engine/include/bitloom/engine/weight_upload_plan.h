// WeightUploadPlan: where each tensor of an artifact goes in the model's weights region of the VRAM
// pool, and how large that region must be (docs/ENGINE.md, "Weight upload").
//
// Tensors are placed in file order (ascending blob offset, so the upload reads the mapping front to
// back), each at the next multiple of kPoolAlignment (256 bytes) after the previous one, so every
// tensor starts as aligned as the region and blobs are copied verbatim: the artifact already holds
// them as the kernels read them (docs/FORMAT.md). The plan is the small table the GPU engine keeps
// to find a tensor: name -> (codec, offset in the region, bytes). Building it reads only the
// manifest; CopyWeightsToHost performs the plan into host memory (the CPU tests, and the oracle of
// the device upload in weight_upload.h). Immutable once built; thread-safe to read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::engine {

struct WeightPlacement {
  std::string name;
  v1::Codec codec = v1::CODEC_UNSPECIFIED;
  uint64_t offset = 0;       // in the weights region; a multiple of kPoolAlignment
  uint64_t bytes = 0;        // the blob's size
  uint64_t file_offset = 0;  // the blob's offset in the artifact
};

class WeightUploadPlan {
 public:
  // Places every tensor of `manifest`. INVALID_ARGUMENT for a duplicate name or a region size that
  // overflows 64 bits (the reader has already rejected both; the plan does not rely on it).
  static absl::StatusOr<WeightUploadPlan> Build(const v1::ArtifactManifest& manifest);

  // In file order.
  const std::vector<WeightPlacement>& tensors() const { return tensors_; }
  // The weights region's size: the end of the last tensor, rounded up to kPoolAlignment.
  uint64_t region_bytes() const { return region_bytes_; }
  // The sum of the blobs (region_bytes minus alignment padding).
  uint64_t blob_bytes() const { return blob_bytes_; }

  // The placement of `name`, or nullptr.
  const WeightPlacement* Find(absl::string_view name) const;

 private:
  std::vector<WeightPlacement> tensors_;
  absl::flat_hash_map<std::string, int> index_;
  uint64_t region_bytes_ = 0;
  uint64_t blob_bytes_ = 0;
};

// Copies every blob of `reader` to region.data() + its placement's offset. INVALID_ARGUMENT when
// the region is smaller than plan.region_bytes(); FAILED_PRECONDITION when a tensor of the plan is
// missing from the artifact or has another size (a plan built for a different artifact).
absl::Status CopyWeightsToHost(const modelstore::ArtifactReader& reader,
                               const WeightUploadPlan& plan, absl::Span<uint8_t> region);

// The blob of each placement of `plan` in `reader`, checked as CopyWeightsToHost describes.
absl::StatusOr<std::vector<absl::Span<const uint8_t>>> PlannedBlobs(
    const modelstore::ArtifactReader& reader, const WeightUploadPlan& plan);

}  // namespace bitloom::engine
