#include "device_properties.h"

#include <cuda_runtime_api.h>

#include <atomic>

#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::kernels::cuda::detail {
namespace {

constexpr int kCachedDevices = 64;

// One property of every device: 0 until first asked; devices past kCachedDevices are queried each
// time. `query(dev, &value)` reads it from the driver.
template <typename Query>
absl::Status CachedPerDevice(std::atomic<int> (&cache)[kCachedDevices], int* value, Query query) {
  int dev = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  const bool cached = dev >= 0 && dev < kCachedDevices;
  if (cached) {
    if (const int v = cache[dev].load(std::memory_order_relaxed); v != 0) {
      *value = v;
      return absl::OkStatus();
    }
  }
  if (absl::Status s = query(dev, value); !s.ok()) return s;
  if (cached) cache[dev].store(*value, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace

absl::Status CurrentDeviceSm(int* sm) {
  static std::atomic<int> cache[kCachedDevices];
  return CachedPerDevice(cache, sm, [](int dev, int* out) -> absl::Status {
    int major = 0, minor = 0;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    *out = major * 10 + minor;
    return absl::OkStatus();
  });
}

absl::Status CurrentDeviceMultiprocessors(int* sms) {
  static std::atomic<int> cache[kCachedDevices];
  return CachedPerDevice(cache, sms, [](int dev, int* out) -> absl::Status {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(out, cudaDevAttrMultiProcessorCount, dev));
    return absl::OkStatus();
  });
}

}  // namespace bitloom::kernels::cuda::detail
