// DeviceArray<T>: an owned, growable cudaMalloc'ed array, the workspace of quant_cuda's classes (the
// kernel launchers themselves never allocate). Reserve() keeps the old allocation when it is big
// enough, so a GpuLdlq that quantizes many tensors of similar shapes allocates once. Move-only;
// not thread-safe. Private to libs/quant/cuda; plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::quant::cuda::internal {

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  ~DeviceArray() { Release(); }
  DeviceArray(DeviceArray&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      Release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // Ensures room for n elements; the contents are undefined afterwards when it had to grow.
  absl::Status Reserve(int64_t n) {
    if (n <= size_) return absl::OkStatus();
    Release();
    void* p = nullptr;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    size_ = n;
    return absl::OkStatus();
  }
  void Release() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }

  T* get() const { return ptr_; }
  int64_t size() const { return size_; }

 private:
  T* ptr_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace bitloom::quant::cuda::internal
