#include "quant_device.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine_runner_factory.h"

namespace bitloom::quantd {

absl::StatusOr<QuantDevice> ResolveQuantDevice(std::string_view flag) {
  if (flag == "cpu") return QuantDevice::kCpu;
  if (flag == "auto") {
    return internal::GpuBuilt() && internal::GpuVisible() ? QuantDevice::kGpu : QuantDevice::kCpu;
  }
  if (flag == "gpu") {
    if (!internal::GpuBuilt()) {
      return absl::FailedPreconditionError(
          "--device=gpu: this quantd was built without CUDA (use --device=cpu or auto)");
    }
    if (!internal::GpuVisible()) {
      return absl::FailedPreconditionError(
          "--device=gpu: no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES, "
          "or use --device=cpu or auto)");
    }
    return QuantDevice::kGpu;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: \"", std::string(flag), "\" is not one of auto, cpu, gpu"));
}

absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateQuantBackend(QuantDevice device,
                                                                        ThreadPool* pool) {
  if (device == QuantDevice::kGpu) return internal::CreateGpuBackend(pool);
  return std::make_unique<quant::CpuQuantBackend>(pool);
}

BlockRunnerFactory RunnerFactoryFor(QuantDevice device) {
  return device == QuantDevice::kGpu ? internal::GpuRunnerFactory() : EngineRunnerFactory();
}

}  // namespace bitloom::quantd
