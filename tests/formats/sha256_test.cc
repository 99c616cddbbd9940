// Sha256 (libs/formats/src/sha256.h, the source digest): FIPS 180-2's test vectors, streaming in
// uneven pieces, and whole files through UpdateFromFile (larger than its 64 MiB read piece).
#include "sha256.h"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitloom::formats {
namespace {

std::string Hex(const std::string& text) {
  absl::StatusOr<Sha256> sha = Sha256::Create();
  EXPECT_TRUE(sha.ok()) << sha.status();
  EXPECT_TRUE(sha->Update({reinterpret_cast<const uint8_t*>(text.data()), text.size()}).ok());
  absl::StatusOr<std::string> hex = sha->FinishHex();
  EXPECT_TRUE(hex.ok()) << hex.status();
  return hex.ok() ? *hex : "";
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PiecesAndFilesHashLikeOneBuffer) {
  std::vector<uint8_t> bytes((uint64_t{64} << 20) + 12345);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  const std::string whole = Hex(std::string(bytes.begin(), bytes.end()));

  absl::StatusOr<Sha256> pieces = Sha256::Create();
  ASSERT_TRUE(pieces.ok());
  for (size_t at = 0, step = 1; at < bytes.size(); at += step, step = step * 3 + 7) {
    const size_t n = std::min(step, bytes.size() - at);
    ASSERT_TRUE(pieces->Update({bytes.data() + at, n}).ok());
  }
  EXPECT_EQ(*pieces->FinishHex(), whole);

  const std::string path = ::testing::TempDir() + "/sha256_test.bin";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
  absl::StatusOr<Sha256> file = Sha256::Create();
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE(file->UpdateFromFile(path).ok());
  EXPECT_EQ(*file->FinishHex(), whole);
  std::filesystem::remove(path);

  absl::StatusOr<Sha256> missing = Sha256::Create();
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->UpdateFromFile(path).ok());
}

}  // namespace
}  // namespace bitloom::formats
