#include "bitloom/kernels/cuda/dependent_launch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "device_properties.h"
#include "launch.h"

namespace bitloom::kernels::cuda {
namespace {

bool EnabledByEnvironment() {
  const char* v = std::getenv("BITLOOM_DEPENDENT_LAUNCH");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

std::atomic<bool>& Enabled() {
  static std::atomic<bool> enabled{EnabledByEnvironment()};
  return enabled;
}

}  // namespace

void SetDependentLaunch(bool enabled) { Enabled().store(enabled, std::memory_order_relaxed); }

bool DependentLaunchEnabled() { return Enabled().load(std::memory_order_relaxed); }

namespace detail {

absl::Status DependentLaunchActive(bool* active) {
  *active = false;
  if (!DependentLaunchEnabled()) return absl::OkStatus();
  int sm = 0;
  if (absl::Status s = CurrentDeviceSm(&sm); !s.ok()) return s;
  *active = sm >= 90;
  return absl::OkStatus();
}

}  // namespace detail
}  // namespace bitloom::kernels::cuda
