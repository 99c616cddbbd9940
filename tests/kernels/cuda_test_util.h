// Helpers for the GPU-vs-CPU kernel tests: GPU detection (the tests skip without one, as CI has
// none), an owning device buffer that starts filled with 0xFF bytes (NaN in fp32 and fp16, so an
// unwritten output shows), and fp16 rounding of host vectors.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bitloom/core/dtype.h"

namespace bitloom::kernels::cuda::testing {

inline bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define BITLOOM_SKIP_WITHOUT_GPU()                         \
  if (!::bitloom::kernels::cuda::testing::HaveGpu())       \
  GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)"

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    EXPECT_EQ(cudaMalloc(&ptr_, bytes_ == 0 ? 1 : bytes_), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr_, 0xFF, bytes_), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  template <typename T>
  void Upload(const std::vector<T>& v) {
    ASSERT_LE(v.size() * sizeof(T), bytes_);
    ASSERT_EQ(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  template <typename T>
  std::vector<T> Download(size_t n) const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), ptr_, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

inline std::vector<uint16_t> ToF16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = F32ToF16(v[i]);
  return h;
}

inline std::vector<float> FromF16(const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = F16ToF32(h[i]);
  return v;
}

// |got − want| within one fp16 rounding of want (half an fp16 ulp, doubled for a want that is
// itself a last-bit away from the GPU's fp32 value) plus fp16's subnormal spacing.
inline bool WithinF16Rounding(float got, float want) {
  return std::abs(got - want) <= std::abs(want) * (1.0f / 1024.0f) + 6e-8f;
}

}  // namespace bitloom::kernels::cuda::testing
