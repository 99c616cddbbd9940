#include "serving_device.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace bitloom::inferd {

absl::StatusOr<ServingDevice> ResolveServingDevice(std::string_view flag) {
  if (flag == "cpu") return ServingDevice::kCpu;
  if (flag == "auto") {
    return internal::GpuBuilt() && internal::GpuVisible() ? ServingDevice::kGpu : ServingDevice::kCpu;
  }
  if (flag == "gpu") {
    if (!internal::GpuBuilt()) {
      return absl::FailedPreconditionError(
          "--device=gpu: this inferd was built without CUDA (use --device=cpu or auto)");
    }
    if (!internal::GpuVisible()) {
      return absl::FailedPreconditionError(
          "--device=gpu: no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES, "
          "or use --device=cpu or auto)");
    }
    return ServingDevice::kGpu;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: \"", std::string(flag), "\" is not one of auto, cpu, gpu"));
}

}  // namespace bitloom::inferd
