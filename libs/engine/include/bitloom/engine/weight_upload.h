// UploadWeights: copies an artifact's tensors into a model's weights region in device memory, as a
// WeightUploadPlan places them (CUDA builds only: the function lives in bitloom::engine_cuda).
//
// The fast path page-locks the artifact's memory mapping in place (cudaHostRegister, read-only) and
// issues one cudaMemcpyAsync per tensor straight from the mapping, so the bytes cross PCIe by DMA
// with no extra host copy. When registering is refused (an unsupported platform or filesystem, or
// options.allow_host_register = false) it falls back to two pinned staging buffers of
// options.staging_chunk_bytes: a chunk is memcpy'd into one while the other is in flight. Either
// way the call returns when every byte has arrived (it synchronises `stream`), with the mapping
// unregistered and the staging buffers freed: this is load-time work, never on the request path.
// The caller makes the region's device current. Thread-safe for distinct regions.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "bitloom/engine/weight_upload_plan.h"
#include "bitloom/modelstore/artifact_reader.h"

namespace bitloom::engine {

struct WeightUploadOptions {
  // Try cudaHostRegister of the mapping first; false forces the staging path.
  bool allow_host_register = true;
  // Size of each of the two pinned staging buffers of the fallback path.
  uint64_t staging_chunk_bytes = uint64_t{64} << 20;
};

struct WeightUploadStats {
  uint64_t bytes = 0;  // blob bytes copied
  int num_tensors = 0;
  bool host_registered = false;  // which path ran
  double seconds = 0;            // wall time of the whole upload, registration and sync included
};

// Copies every tensor of `plan` from `reader` to device_region + its offset. INVALID_ARGUMENT when
// the region is smaller than plan.region_bytes() or the chunk size is 0; FAILED_PRECONDITION for a
// plan of another artifact (see PlannedBlobs); INTERNAL (naming the call) when CUDA fails.
absl::StatusOr<WeightUploadStats> UploadWeights(const modelstore::ArtifactReader& reader,
                                                const WeightUploadPlan& plan,
                                                uint8_t* device_region, uint64_t region_bytes,
                                                cudaStream_t stream,
                                                const WeightUploadOptions& options = {});

}  // namespace bitloom::engine
