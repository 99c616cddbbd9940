// The GPU half of serving_device.h in builds without CUDA: there is no GPU engine.
#include "serving_device.h"

namespace bitloom::inferd {

absl::StatusOr<std::unique_ptr<engine::VramPool>> CreateDevicePool(const MemoryBudget&, v1::DeviceInfo*) {
  return absl::FailedPreconditionError("GPU serving: this build has no CUDA engine");
}

absl::StatusOr<std::unique_ptr<SequenceEngine>> LoadGpuEngine(const modelstore::ArtifactReader&,
                                                              engine::VramPool*, const LoadOptions&, int, bool,
                                                              GpuRegionBytes*) {
  return absl::FailedPreconditionError("GPU serving: this build has no CUDA engine");
}

namespace internal {
bool GpuBuilt() { return false; }
bool GpuVisible() { return false; }
}  // namespace internal

}  // namespace bitloom::inferd
