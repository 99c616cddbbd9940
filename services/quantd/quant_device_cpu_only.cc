// The GPU half of quant_device.h in builds without the CUDA path: there is no GPU backend.
#include "quant_device.h"

namespace bitloom::quantd::internal {

bool GpuBuilt() { return false; }

bool GpuVisible() { return false; }

absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateGpuBackend(ThreadPool*) {
  return absl::FailedPreconditionError("GPU quantization: this build has no CUDA path");
}

}  // namespace bitloom::quantd::internal
