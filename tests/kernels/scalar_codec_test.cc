#include "bitloom/kernels/scalar_codec.h"

#include <gtest/gtest.h>

#include <random>
#include <tuple>

#include "bitloom/core/dtype.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/matmul_f32.h"
#include "test_util.h"

namespace bitloom::kernels {
namespace {

struct Packed {
  ScalarCodecLayout layout;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  std::vector<uint8_t> blob;
};

Packed RandomPacked(int64_t rows, int64_t cols, int bits, int group, uint64_t seed) {
  Packed p;
  p.layout = *MakeScalarCodecLayout(rows, cols, bits, group);
  std::mt19937_64 rng(seed);
  p.codes.resize(rows * cols);
  for (auto& c : p.codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
  p.scales.resize(rows * p.layout.groups_per_row);
  std::uniform_real_distribution<float> sd(0.01f, 0.2f);
  for (auto& s : p.scales) s = F32ToF16(sd(rng));
  p.blob = *PackScalarCodec(p.layout, p.codes, p.scales);
  return p;
}

TEST(ScalarCodecLayout, SizesAndAlignment) {
  const auto l = *MakeScalarCodecLayout(576, 1536, 4, 128);
  EXPECT_EQ(l.blocks_per_row, 48);
  EXPECT_EQ(l.groups_per_row, 12);
  EXPECT_EQ(l.row_stride_words, 192);
  EXPECT_EQ(l.total_bytes, 576 * 1536 / 2 + 576 * 12 * 2);
  EXPECT_DOUBLE_EQ(l.BitsPerWeight(), 4.125);
  // 576 columns at 3 bits: 18 blocks · 3 words = 54, padded to 56 for 16-byte rows.
  const auto odd = *MakeScalarCodecLayout(10, 576, 3, 128);
  EXPECT_EQ(odd.row_stride_words, 56);
  EXPECT_EQ(odd.groups_per_row, 5);  // 4 full groups and one of 64
  EXPECT_EQ(odd.codes_bytes % 16, 0);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t cols : {1, 31, 33, 100, 576, 1000}) {
      const auto x = *MakeScalarCodecLayout(3, cols, bits, 64);
      EXPECT_EQ(x.row_stride_words % 4, 0);
      EXPECT_GE(x.row_stride_words * 32, cols * bits);
    }
  }
}

TEST(ScalarCodecLayout, RejectsBadParameters) {
  EXPECT_FALSE(MakeScalarCodecLayout(4, 64, 0, 128).ok());
  EXPECT_FALSE(MakeScalarCodecLayout(4, 64, 9, 128).ok());
  EXPECT_FALSE(MakeScalarCodecLayout(4, 64, 4, 100).ok());
  EXPECT_FALSE(MakeScalarCodecLayout(4, 64, 4, 0).ok());
  EXPECT_FALSE(MakeScalarCodecLayout(0, 64, 4, 128).ok());
  EXPECT_FALSE(MakeScalarCodecLayout(4, -1, 4, 128).ok());
}

TEST(ScalarCodecLayout, CodeAtMatchesBitStream) {
  // Code i lives at stream bits [iK, iK+K): check one straddling code by hand.
  // K = 3, code 10 occupies bits 30..32: two bits in word 0, one in word 1.
  uint32_t words[3] = {0x80000000u | 0x40000000u, 0x1u, 0};
  EXPECT_EQ(ScalarCodeAt(words, 3, 10), 7u);
  words[1] = 0;
  EXPECT_EQ(ScalarCodeAt(words, 3, 10), 3u);
}

class ScalarCodecRoundTrip
    : public ::testing::TestWithParam<std::tuple<int, int64_t, int64_t, int>> {};

TEST_P(ScalarCodecRoundTrip, PackUnpackDequantize) {
  const auto [bits, rows, cols, group] = GetParam();
  const Packed p = RandomPacked(rows, cols, bits, group, 1000 * bits + cols);
  ASSERT_EQ(static_cast<int64_t>(p.blob.size()), p.layout.total_bytes);
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  ASSERT_TRUE(UnpackScalarCodec(p.layout, p.blob, &codes, &scales).ok());
  EXPECT_EQ(codes, p.codes);
  EXPECT_EQ(scales, p.scales);
  std::vector<float> w(rows * cols);
  ThreadPool pool(2);
  ASSERT_TRUE(DequantizeScalarCodec(p.layout, p.blob, w.data(), &pool).ok());
  const float center = ScalarGridCenter(bits);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float s = F16ToF32(p.scales[r * p.layout.groups_per_row + c / group]);
      ASSERT_EQ(w[r * cols + c], s * (static_cast<float>(p.codes[r * cols + c]) - center))
          << r << "," << c;
    }
  }
  // Padding codes are zero, so a kernel that reads whole blocks sees nothing stale.
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = p.blob.data() + r * p.layout.row_stride_words * 4;
    const int64_t used_bits = cols * bits;
    for (int64_t bit = used_bits; bit < p.layout.row_stride_words * 32; ++bit) {
      ASSERT_EQ((row[bit / 8] >> (bit % 8)) & 1, 0) << "row " << r << " bit " << bit;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryBitWidth, ScalarCodecRoundTrip,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 6, 7, 8),
                                            ::testing::Values<int64_t>(1, 7),
                                            ::testing::Values<int64_t>(1, 31, 32, 33, 130, 576),
                                            ::testing::Values(32, 128)));

TEST(ScalarCodec, RejectsBadInput) {
  const auto l = *MakeScalarCodecLayout(2, 40, 3, 32);
  std::vector<uint8_t> codes(80, 0);
  std::vector<uint16_t> scales(4, 0);
  codes[5] = 8;  // needs 4 bits
  EXPECT_FALSE(PackScalarCodec(l, codes, scales).ok());
  codes[5] = 7;
  EXPECT_FALSE(PackScalarCodec(l, codes, absl::Span<const uint16_t>(scales.data(), 3)).ok());
  auto blob = *PackScalarCodec(l, codes, scales);
  blob.pop_back();
  std::vector<float> w(80);
  EXPECT_FALSE(DequantizeScalarCodec(l, blob, w.data(), nullptr).ok());
  std::vector<uint8_t> c2;
  std::vector<uint16_t> s2;
  EXPECT_FALSE(UnpackScalarCodec(l, blob, &c2, &s2).ok());
}

class ScalarCodecGemvShapes
    : public ::testing::TestWithParam<std::tuple<int, int64_t, int64_t, int64_t>> {};

TEST_P(ScalarCodecGemvShapes, MatchesDequantizedMatmulOfRotatedX) {
  const auto [bits, rows, cols, batch] = GetParam();
  const Packed p = RandomPacked(rows, cols, bits, 128, 7 + bits);
  const auto rot = *HadamardRotation::Create(cols, 99);
  const auto x = testing::RandomVector(batch * cols, 3);
  ThreadPool pool(3);
  std::vector<float> y(batch * rows, -1.0f);
  ScalarCodecGemvParams params{&p.layout, p.blob, &rot, x.data(), y.data(), batch};
  ASSERT_TRUE(ScalarCodecGemv(params, &pool).ok());

  // Reference: dequantize, rotate x, fp32 matmul; must be bit-identical (same dot-product order).
  std::vector<float> w(rows * cols);
  ASSERT_TRUE(DequantizeScalarCodec(p.layout, p.blob, w.data(), nullptr).ok());
  std::vector<float> xr = x;
  rot.Apply(xr.data(), batch, nullptr);
  std::vector<float> want(batch * rows);
  ASSERT_TRUE(
      MatmulF32({xr.data(), w.data(), nullptr, want.data(), batch, rows, cols}, nullptr).ok());
  EXPECT_EQ(y, want);

  // And W'·(R·x) equals (W'·R)·x, the unrotated weight times the raw x, up to rounding.
  std::vector<float> w_unrot = w;
  rot.ApplyTranspose(w_unrot.data(), rows, nullptr);  // rows of W'·R = Rᵀ·w'_r
  std::vector<double> exact(batch * rows, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c)
        exact[b * rows + r] += double(x[b * cols + c]) * w_unrot[r * cols + c];
    }
  }
  EXPECT_LT(testing::MaxNormalizedError(y, exact), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, ScalarCodecGemvShapes,
    ::testing::Values(std::make_tuple(2, 1, 1, 1), std::make_tuple(3, 5, 33, 2),
                      std::make_tuple(4, 17, 576, 1), std::make_tuple(5, 9, 1536, 3),
                      std::make_tuple(8, 3, 640, 8), std::make_tuple(1, 4, 96, 1),
                      std::make_tuple(6, 31, 200, 4)));

TEST(ScalarCodecGemv, RejectsMismatchedRotation) {
  const Packed p = RandomPacked(2, 64, 4, 32, 1);
  const auto rot = *HadamardRotation::Create(32, 1);
  std::vector<float> x(64), y(2);
  ScalarCodecGemvParams params{&p.layout, p.blob, &rot, x.data(), y.data(), 1};
  EXPECT_FALSE(ScalarCodecGemv(params, nullptr).ok());
  params.rotation = nullptr;
  params.x = nullptr;
  EXPECT_FALSE(ScalarCodecGemv(params, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::kernels
