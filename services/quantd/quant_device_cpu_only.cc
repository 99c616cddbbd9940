// The GPU half of quant_device.h in builds without the CUDA path: there is no GPU backend.
#include "quant_device.h"

namespace bitloom::quantd::internal {

bool GpuBuilt() { return false; }

bool GpuVisible() { return false; }

absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateGpuBackend(ThreadPool*) {
  return absl::FailedPreconditionError("GPU quantization: this build has no CUDA path");
}

BlockRunnerFactory GpuRunnerFactory() {
  const absl::Status none =
      absl::FailedPreconditionError("GPU block forwards: this build has no CUDA path");
  return {.supports = [none](const formats::Checkpoint&) { return none; },
          .create = [none](const formats::Checkpoint&, ThreadPool*)
              -> absl::StatusOr<std::unique_ptr<quant::BlockRunner>> { return none; }};
}

}  // namespace bitloom::quantd::internal
