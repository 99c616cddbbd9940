#include "bitloom/modelstore/format.h"

#include <cstdint>
#include <vector>

#include "bitloom/modelstore/codec_layout.h"
#include "gtest/gtest.h"

namespace bitloom::modelstore {
namespace {

TEST(FormatTest, HeaderRoundTripsAndIsLittleEndian) {
  FileHeader h;
  h.format_version = 1;
  h.min_reader_version = 1;
  h.manifest_offset = 0x0102030405060708ull;
  h.manifest_size = 77;
  h.manifest_xxh3 = 0xdeadbeefcafef00dull;
  h.data_offset = 4096;
  h.file_size = 123456;
  const auto bytes = EncodeHeader(h);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), std::string("BITLOOM\0", 8));
  EXPECT_EQ(bytes[8], 1);
  EXPECT_EQ(bytes[16], 0x08);  // least significant byte first
  EXPECT_EQ(bytes[23], 0x01);
  auto decoded = DecodeHeader(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->manifest_offset, h.manifest_offset);
  EXPECT_EQ(decoded->manifest_size, h.manifest_size);
  EXPECT_EQ(decoded->manifest_xxh3, h.manifest_xxh3);
  EXPECT_EQ(decoded->data_offset, h.data_offset);
  EXPECT_EQ(decoded->file_size, h.file_size);
  EXPECT_EQ(decoded->header_xxh3, Xxh3(absl::MakeConstSpan(bytes.data(), 56)));
}

TEST(FormatTest, DecodeHeaderRejectsShortBadMagicAndBadChecksum) {
  const auto good = EncodeHeader(FileHeader{1, 1, 4096, 0, 0, 4096, 4096, 0});
  EXPECT_TRUE(absl::IsDataLoss(DecodeHeader(absl::MakeConstSpan(good.data(), 63)).status()));
  for (size_t byte = 0; byte < kHeaderSize; ++byte) {
    auto bad = good;
    bad[byte] ^= 0x10;
    EXPECT_TRUE(absl::IsDataLoss(DecodeHeader(bad).status())) << "byte " << byte;
  }
}

TEST(CodecLayoutTest, DenseSizes) {
  const std::vector<uint64_t> shape = {3, 5};
  EXPECT_EQ(*ExpectedBlobSize(v1::CODEC_F32, shape), 60u);
  EXPECT_EQ(*ExpectedBlobSize(v1::CODEC_F16, shape), 30u);
  EXPECT_EQ(*ExpectedBlobSize(v1::CODEC_BF16, shape), 30u);
  EXPECT_EQ(*ExpectedBlobSize(v1::CODEC_F32, {}), 4u);  // a scalar
  const std::vector<uint64_t> empty = {4, 0, 9};
  EXPECT_EQ(*ExpectedBlobSize(v1::CODEC_F16, empty), 0u);
}

TEST(CodecLayoutTest, OverflowIsRejected) {
  const std::vector<uint64_t> elements = {uint64_t{1} << 32, uint64_t{1} << 32};
  EXPECT_TRUE(absl::IsInvalidArgument(ExpectedBlobSize(v1::CODEC_F16, elements).status()));
  const std::vector<uint64_t> bytes = {uint64_t{1} << 62};  // fits as a count, not as f32 bytes
  EXPECT_TRUE(absl::IsInvalidArgument(ExpectedBlobSize(v1::CODEC_F32, bytes).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ElementCount(elements).status()));
}

TEST(CodecLayoutTest, UnspecifiedAndNonDenseCodecs) {
  const std::vector<uint64_t> shape = {4};
  EXPECT_TRUE(absl::IsInvalidArgument(ExpectedBlobSize(v1::CODEC_UNSPECIFIED, shape).status()));
  EXPECT_TRUE(absl::IsUnimplemented(ExpectedBlobSize(v1::CODEC_HADAMARD_SCALAR, shape).status()));
  EXPECT_TRUE(absl::IsUnimplemented(ExpectedBlobSize(v1::CODEC_TRELLIS, shape).status()));
  EXPECT_TRUE(absl::IsUnimplemented(ExpectedBlobSize(static_cast<v1::Codec>(77), shape).status()));
  EXPECT_EQ(CodecName(static_cast<v1::Codec>(77)), "codec#77");
}

}  // namespace
}  // namespace bitloom::modelstore
