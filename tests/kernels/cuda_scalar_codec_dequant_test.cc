// The prefill GEMM's weight expansion on the GPU (LaunchScalarCodecDequant) against the CPU's
// DequantizeScalarCodec rounded to fp16: equal bit for bit, for every K, group sizes 32-256, column
// counts that leave a partial code block, and row slices that start mid-matrix. The argument checks
// run without a GPU; the rest skips when there is none (CI).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bitloom/core/dtype.h"
#include "bitloom/kernels/cuda/scalar_codec_dequant.h"
#include "bitloom/kernels/scalar_codec.h"
#include "cuda_test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

struct Packed {
  ScalarCodecLayout layout;
  std::vector<uint8_t> blob;
};

Packed RandomWeight(int64_t rows, int64_t cols, int bits, int group_size, uint32_t seed) {
  Packed p;
  absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(rows, cols, bits, group_size);
  EXPECT_TRUE(layout.ok()) << layout.status();
  p.layout = *layout;
  std::mt19937 rng(seed);
  std::vector<uint8_t> codes(rows * cols);
  for (uint8_t& q : codes) q = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
  std::vector<uint16_t> scales(rows * p.layout.groups_per_row);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);  // the encoder's scales may be negative
  for (uint16_t& s : scales) s = F32ToF16(scale(rng));
  absl::StatusOr<std::vector<uint8_t>> blob = PackScalarCodec(p.layout, codes, scales);
  EXPECT_TRUE(blob.ok()) << blob.status();
  p.blob = *std::move(blob);
  return p;
}

struct DequantCase {
  int64_t rows, cols;
  int bits, group_size;
  int64_t row_begin, row_count;
};

TEST(CudaScalarCodecDequant, MatchesCpuDequantizeRoundedToF16) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const DequantCase cases[] = {
      {37, 200, 1, 32, 0, 37},      {53, 576, 2, 64, 5, 40},    {16, 4096, 3, 128, 0, 16},
      {300, 1000, 4, 128, 299, 1},  {33, 1536, 5, 256, 1, 31},  {8, 96, 6, 32, 0, 8},
      {129, 14336 / 8, 7, 128, 64, 65}, {20, 4096, 8, 128, 3, 17},
  };
  for (const DequantCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "[" << c.rows << ", " << c.cols << "] K=" << c.bits
                                      << " group=" << c.group_size << " rows " << c.row_begin << "+"
                                      << c.row_count);
    const Packed w = RandomWeight(c.rows, c.cols, c.bits, c.group_size, static_cast<uint32_t>(c.rows * 7 + c.bits));
    std::vector<float> want(c.rows * c.cols);
    ASSERT_TRUE(DequantizeScalarCodec(w.layout, w.blob, want.data(), nullptr).ok());

    DeviceBuffer d_blob(w.blob.size());
    d_blob.Upload(w.blob);
    const int64_t stride = w.layout.blocks_per_row * 32 + 8;  // a stride wider than the row
    DeviceBuffer d_out(c.row_count * stride * 2);
    ScalarCodecDequantParams p;
    p.weight = MakeGemvParams(w.layout, d_blob.as<void>());
    p.row_begin = c.row_begin;
    p.row_count = c.row_count;
    p.out = d_out.as<uint16_t>();
    p.out_stride = stride;
    ASSERT_TRUE(LaunchScalarCodecDequant(p, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<uint16_t> got = d_out.Download<uint16_t>(c.row_count * stride);

    int64_t mismatches = 0;
    for (int64_t r = 0; r < c.row_count; ++r) {
      for (int64_t col = 0; col < c.cols; ++col) {
        const uint16_t expect = F32ToF16(want[(c.row_begin + r) * c.cols + col]);
        if (got[r * stride + col] != expect && ++mismatches <= 5) {
          ADD_FAILURE() << "row " << c.row_begin + r << " col " << col << ": got 0x" << std::hex
                        << got[r * stride + col] << " want 0x" << expect;
        }
      }
      // The padding columns of the last code block are written (finite), the stride tail is not.
      for (int64_t col = c.cols; col < w.layout.blocks_per_row * 32; ++col) {
        EXPECT_TRUE(std::isfinite(F16ToF32(got[r * stride + col]))) << "pad col " << col;
      }
      for (int64_t col = w.layout.blocks_per_row * 32; col < stride; ++col) {
        EXPECT_EQ(got[r * stride + col], 0xFFFF) << "stride tail col " << col << " was written";
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(CudaScalarCodecDequant, RejectsBadParamsNamingTheField) {
  const ScalarCodecLayout layout = *MakeScalarCodecLayout(64, 256, 4, 128);
  alignas(16) static uint8_t fake[16];  // never dereferenced: validation fails first
  ScalarCodecDequantParams good;
  good.weight = MakeGemvParams(layout, fake);
  good.row_begin = 0;
  good.row_count = 64;
  good.out = reinterpret_cast<uint16_t*>(fake);
  good.out_stride = 256;

  auto expect_error = [](const ScalarCodecDequantParams& p, const char* field) {
    const absl::Status s = LaunchScalarCodecDequant(p, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
  };
  ScalarCodecDequantParams p = good;
  p.row_count = 65;
  expect_error(p, "rows [0, 65) not inside [0, 64)");
  p = good;
  p.row_begin = -1;
  expect_error(p, "rows [");
  p = good;
  p.out_stride = 250;
  expect_error(p, "out_stride 250");
  p = good;
  p.out = nullptr;
  expect_error(p, "out must be non-null");
  p = good;
  p.weight.bits = 9;
  expect_error(p, "weight.bits 9");
  p = good;
  p.weight.row_stride_words = 1;
  expect_error(p, "weight layout fields");
  p = good;
  p.out = reinterpret_cast<uint16_t*>(fake + 2);
  expect_error(p, "out must be 16-byte aligned");
}

}  // namespace
}  // namespace bitloom::kernels::cuda
