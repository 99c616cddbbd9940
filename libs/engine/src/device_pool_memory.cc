#include "bitloom/engine/device_pool_memory.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::engine {
namespace {

class DevicePoolMemory : public PoolMemory {
 public:
  DevicePoolMemory(int device, uint8_t* base, uint64_t size)
      : device_(device), base_(base), size_(size) {}
  ~DevicePoolMemory() override {
    int current = 0;
    const bool switch_device = cudaGetDevice(&current) == cudaSuccess && current != device_;
    if (switch_device) cudaSetDevice(device_);
    cudaFree(base_);
    if (switch_device) cudaSetDevice(current);
  }
  DevicePoolMemory(const DevicePoolMemory&) = delete;
  DevicePoolMemory& operator=(const DevicePoolMemory&) = delete;

  uint8_t* base() const override { return base_; }
  uint64_t size() const override { return size_; }
  bool on_device() const override { return true; }

 private:
  int device_;
  uint8_t* base_;
  uint64_t size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PoolMemory>> AllocateDevicePoolMemory(const VramBudget& budget,
                                                                     int device) {
  int count = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("VRAM pool: device ", device, " of ", count, " CUDA devices"));
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  BITLOOM_ASSIGN_OR_RETURN(const uint64_t bytes, ResolveVramBudget(budget, free_bytes));
  if (bytes == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("VRAM pool: the budget leaves 0 bytes (",
                                                     free_bytes, " bytes free on device ", device,
                                                     ")"));
  }
  void* base = nullptr;
  const cudaError_t err = cudaMalloc(&base, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // cudaMalloc's failure is not sticky, but clear it for the next caller
    return absl::ResourceExhaustedError(absl::StrCat("VRAM pool: cudaMalloc of ", bytes,
                                                     " bytes failed on device ", device, " (",
                                                     free_bytes, " bytes reported free)"));
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(err);
  return std::make_unique<DevicePoolMemory>(device, static_cast<uint8_t*>(base), bytes);
}

}  // namespace bitloom::engine
