// Helpers for the GPU-vs-CPU kernel tests: GPU detection (the tests skip without one, as CI has
// none), an owning device buffer that starts filled with 0xFF bytes (NaN in fp32 and fp16, so an
// unwritten output shows), fp16 rounding of host vectors, and random packed scalar-codec weights.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <random>

#include "absl/status/statusor.h"
#include "bitloom/core/dtype.h"
#include "bitloom/kernels/scalar_codec.h"

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

// A CODEC_HADAMARD_SCALAR weight of [rows, cols] with uniformly random K-bit codes and fp16 group
// scales of 0.01-0.04, packed as the artifact stores it (empty on a bad shape, with a test failure).
struct PackedMatrix {
  ScalarCodecLayout layout;
  std::vector<uint8_t> blob;
};

inline PackedMatrix RandomPackedMatrix(int64_t rows, int64_t cols, int bits, int group_size,
                                       uint64_t seed) {
  absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(rows, cols, bits, group_size);
  EXPECT_TRUE(layout.ok()) << layout.status();
  if (!layout.ok()) return {};
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> codes(rows * cols);
  std::uniform_int_distribution<int> code_dist(0, (1 << bits) - 1);
  for (uint8_t& q : codes) q = static_cast<uint8_t>(code_dist(rng));
  std::vector<uint16_t> scales(rows * layout->groups_per_row);
  std::uniform_real_distribution<float> scale_dist(0.5f, 2.0f);
  for (uint16_t& h : scales) h = F32ToF16(scale_dist(rng) * 0.02f);
  absl::StatusOr<std::vector<uint8_t>> blob = PackScalarCodec(*layout, codes, scales);
  EXPECT_TRUE(blob.ok()) << blob.status();
  if (!blob.ok()) return {};
  return {*layout, *std::move(blob)};
}

}  // namespace bitloom::kernels::cuda::testing
