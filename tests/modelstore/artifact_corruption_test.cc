// The reader against damaged and hostile files: every input gives a clean status, never a crash or
// an out-of-bounds read (run under ASan to make the latter loud).
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/format.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace bitloom::modelstore {
namespace {

using testing::EditHeader;
using testing::EditManifest;
using testing::ReadFileBytes;
using testing::ScratchDir;
using testing::WriteFileBytes;

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteSmallArtifact(dir_.Join("good.bitloom"), dir_.path());
    good_ = ReadFileBytes(dir_.Join("good.bitloom"));
    auto header = DecodeHeader(good_);
    ASSERT_TRUE(header.ok());
    header_ = *header;
    auto reader = ArtifactReader::Open(dir_.Join("good.bitloom"));
    ASSERT_TRUE(reader.ok()) << reader.status();
    manifest_ = (*reader)->manifest();
  }

  absl::Status OpenBytes(const std::vector<uint8_t>& bytes, bool verify = true) {
    const std::string path = dir_.Join("bad.bitloom");
    WriteFileBytes(path, bytes);
    return ArtifactReader::Open(path, {.verify_checksums = verify}).status();
  }

  // Expects DATA_LOSS whose message contains `fragment`.
  void ExpectDataLoss(const std::vector<uint8_t>& bytes, const std::string& fragment) {
    const absl::Status s = OpenBytes(bytes);
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_NE(s.message().find(fragment), std::string::npos)
        << "message: " << s.message() << "\nwanted: " << fragment;
  }

  const v1::TensorEntry& Tensor(const std::string& name) const {
    for (const auto& t : manifest_.tensors()) {
      if (t.name() == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return manifest_.tensors(0);
  }

  ScratchDir dir_;
  std::vector<uint8_t> good_;
  FileHeader header_;
  v1::ArtifactManifest manifest_;
};

TEST_F(CorruptionTest, GoodFileOpens) { EXPECT_TRUE(OpenBytes(good_).ok()); }

TEST_F(CorruptionTest, TruncatedAtEverySectionBoundary) {
  std::vector<uint64_t> cuts = {0,
                                1,
                                7,
                                8,
                                55,
                                56,
                                63,
                                64,
                                65,
                                kDataOffset - 1,
                                kDataOffset,
                                header_.manifest_offset - 1,
                                header_.manifest_offset,
                                header_.manifest_offset + 1,
                                good_.size() - 1};
  for (const auto& t : manifest_.tensors()) {
    cuts.push_back(t.offset());
    cuts.push_back(t.offset() + t.size());
  }
  for (uint64_t cut : cuts) {
    ASSERT_LT(cut, good_.size());
    const std::vector<uint8_t> truncated(good_.begin(), good_.begin() + cut);
    const absl::Status s = OpenBytes(truncated);
    EXPECT_TRUE(absl::IsDataLoss(s)) << "cut at " << cut << ": " << s;
  }
  const std::vector<uint8_t> short_file(good_.begin(), good_.begin() + 100);
  ExpectDataLoss(short_file, absl::StrCat("file is 100 bytes, header says ", good_.size()));
  ExpectDataLoss({}, "file is 0 bytes, shorter than the 64-byte header");
}

TEST_F(CorruptionTest, TruncationSweep) {
  for (uint64_t cut = 0; cut < good_.size(); cut += 97) {
    const std::vector<uint8_t> truncated(good_.begin(), good_.begin() + cut);
    EXPECT_TRUE(absl::IsDataLoss(OpenBytes(truncated))) << "cut at " << cut;
  }
  std::vector<uint8_t> extended = good_;
  extended.push_back(0);
  ExpectDataLoss(extended, "header says");
}

TEST_F(CorruptionTest, HeaderBitFlipsAreAlwaysDetected) {
  for (size_t byte = 0; byte < kHeaderSize; ++byte) {
    for (int bit : {0, 7}) {
      std::vector<uint8_t> bad = good_;
      bad[byte] ^= static_cast<uint8_t>(1u << bit);
      const absl::Status s = OpenBytes(bad, /*verify=*/false);
      EXPECT_TRUE(absl::IsDataLoss(s)) << "byte " << byte << " bit " << bit << ": " << s;
    }
  }
}

TEST_F(CorruptionTest, ManifestBitFlipsAreAlwaysDetected) {
  for (uint64_t at = header_.manifest_offset; at < good_.size(); ++at) {
    std::vector<uint8_t> bad = good_;
    bad[at] ^= 0x04;
    const absl::Status s = OpenBytes(bad, /*verify=*/false);
    EXPECT_TRUE(absl::IsDataLoss(s)) << "offset " << at << ": " << s;
    EXPECT_NE(s.message().find("manifest checksum mismatch"), std::string::npos) << s;
  }
}

TEST_F(CorruptionTest, DataBitFlipsAreDetectedWhenVerifying) {
  const v1::TensorEntry& t = Tensor("b.f16");
  for (uint64_t at = t.offset(); at < t.offset() + t.size(); ++at) {
    std::vector<uint8_t> bad = good_;
    bad[at] ^= 0x80;
    EXPECT_TRUE(OpenBytes(bad, /*verify=*/false).ok()) << "without verification blobs are not read";
    ExpectDataLoss(bad, "tensor 'b.f16': checksum mismatch");
    WriteFileBytes(dir_.Join("bad.bitloom"), bad);
    auto reader = ArtifactReader::Open(dir_.Join("bad.bitloom"));
    ASSERT_TRUE(reader.ok());
    EXPECT_TRUE(absl::IsDataLoss((*reader)->VerifyChecksums()));
  }
}

TEST_F(CorruptionTest, PaddingIsNotChecked) {
  std::vector<uint8_t> bad = good_;
  bad[kHeaderSize + 10] = 0xff;                // between the header and the data region
  bad[Tensor("a.f32").offset() + 100] = 0xff;  // after a blob, before the next page
  EXPECT_TRUE(OpenBytes(bad).ok());
}

TEST_F(CorruptionTest, HostileHeaderFields) {
  auto with_header = [&](auto edit) {
    std::vector<uint8_t> bytes = good_;
    EditHeader(bytes, edit);
    return bytes;
  };
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_offset = 10; }),
                 "manifest_offset 10 is before the data region at 4096");
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_offset = 0; }), "manifest_offset 0");
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_size = UINT64_MAX; }),
                 "does not end the");
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_size = 1; }), "does not end the");
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_offset = UINT64_MAX - 3; }),
                 "does not end the");
  ExpectDataLoss(with_header([](FileHeader& h) { h.file_size = UINT64_MAX; }),
                 absl::StrCat("file is ", good_.size(), " bytes, header says ", UINT64_MAX));
  ExpectDataLoss(with_header([](FileHeader& h) { h.data_offset = 100; }), "data_offset 100");
  ExpectDataLoss(with_header([](FileHeader& h) { h.data_offset = 0; }), "data_offset 0");
  ExpectDataLoss(with_header([](FileHeader& h) { h.data_offset = 8192 * 1024; }),
                 "is before the data region");
  ExpectDataLoss(with_header([](FileHeader& h) { h.manifest_xxh3 ^= 1; }),
                 "manifest checksum mismatch");
  ExpectDataLoss(with_header([](FileHeader& h) { h.format_version = 0; }), "invalid versions");
  ExpectDataLoss(with_header([](FileHeader& h) { h.min_reader_version = 0; }), "invalid versions");
  ExpectDataLoss(with_header([](FileHeader& h) { h.min_reader_version = 2; }), "invalid versions");
}

TEST_F(CorruptionTest, NewerVersions) {
  std::vector<uint8_t> compatible = good_;
  EditHeader(compatible, [](FileHeader& h) { h.format_version = 7; });
  const std::string path = dir_.Join("newer.bitloom");
  WriteFileBytes(path, compatible);
  auto reader = ArtifactReader::Open(path, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->header().format_version, 7u);

  std::vector<uint8_t> incompatible = good_;
  EditHeader(incompatible, [](FileHeader& h) {
    h.format_version = 3;
    h.min_reader_version = 2;
  });
  const absl::Status s = OpenBytes(incompatible);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("artifact format needs reader version 2, this reader supports 1"),
            std::string::npos)
      << s;

  // A newer writer may add manifest fields this reader does not know; they are ignored.
  std::vector<uint8_t> extra_field = good_;
  EditManifest(extra_field, [](v1::ArtifactManifest& m) {
    m.GetReflection()->MutableUnknownFields(&m)->AddVarint(9999, 1);
  });
  EXPECT_TRUE(OpenBytes(extra_field).ok());
}

TEST_F(CorruptionTest, HostileTensorEntries) {
  auto with_tensor = [&](const std::string& name, auto edit) {
    std::vector<uint8_t> bytes = good_;
    EditManifest(bytes, [&](v1::ArtifactManifest& m) {
      for (auto& t : *m.mutable_tensors()) {
        if (t.name() == name) edit(t);
      }
    });
    return bytes;
  };
  const v1::TensorEntry a = Tensor("a.f32");
  const v1::TensorEntry b = Tensor("b.f16");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_offset(t.offset() + 123); }),
                 absl::StrCat("tensor 'a.f32': offset ", a.offset() + 123, " is not 4096-aligned"));
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_size(UINT64_MAX - 100); }),
                 "tensor 'a.f32': blob [");
  ExpectDataLoss(with_tensor("a.f32",
                             [](v1::TensorEntry& t) {
                               t.set_offset(UINT64_MAX / kBlobAlignment * kBlobAlignment);
                               t.set_size(8192);
                             }),
                 "is outside the data region");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_offset(0); }),
                 "is outside the data region");
  ExpectDataLoss(
      with_tensor("a.f32",
                  [&](v1::TensorEntry& t) {
                    t.set_offset((header_.manifest_offset / kBlobAlignment + 4) * kBlobAlignment);
                  }),
      "is outside the data region");
  // A blob that runs into the manifest.
  ExpectDataLoss(
      with_tensor(
          "d.q", [&](v1::TensorEntry& t) { t.set_size(header_.manifest_offset - t.offset() + 1); }),
      "tensor 'd.q': blob [");
  ExpectDataLoss(with_tensor("b.f16", [&](v1::TensorEntry& t) { t.set_offset(a.offset()); }),
                 "overlaps tensor");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_shape(0, 4); }),
                 "tensor 'a.f32': size 60 does not match f32 shape [4, 5], which needs 80 bytes");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_codec(v1::CODEC_F16); }),
                 "does not match f16 shape");
  ExpectDataLoss(with_tensor("a.f32",
                             [](v1::TensorEntry& t) {
                               t.set_shape(0, uint64_t{1} << 40);
                               t.set_shape(1, uint64_t{1} << 40);
                             }),
                 "more than 2^64");
  ExpectDataLoss(
      with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_codec(v1::CODEC_UNSPECIFIED); }),
      "CODEC_UNSPECIFIED");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_name(""); }),
                 "has an empty name");
  ExpectDataLoss(with_tensor("a.f32", [&](v1::TensorEntry& t) { t.set_name(b.name()); }),
                 "duplicate tensor 'b.f16'");
  ExpectDataLoss(with_tensor("a.f32", [](v1::TensorEntry& t) { t.set_xxh3(t.xxh3() + 1); }),
                 "tensor 'a.f32': checksum mismatch");

  // A codec newer than this reader: its size is not checked, its bounds are.
  EXPECT_TRUE(OpenBytes(with_tensor("d.q", [](v1::TensorEntry& t) {
                t.set_codec(static_cast<v1::Codec>(42));
              })).ok());
}

TEST_F(CorruptionTest, ManifestThatDoesNotParse) {
  std::vector<uint8_t> bytes = good_;
  const std::vector<uint8_t> junk = {0xff, 0xff, 0xff, 0xff, 0xff};
  bytes.resize(header_.manifest_offset);
  bytes.insert(bytes.end(), junk.begin(), junk.end());
  EditHeader(bytes, [&](FileHeader& h) {
    h.manifest_size = junk.size();
    h.manifest_xxh3 = Xxh3(junk);
    h.file_size = bytes.size();
  });
  ExpectDataLoss(bytes, "does not parse as bitloom.v1.ArtifactManifest");
}

TEST_F(CorruptionTest, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(ArtifactReader::Open(dir_.Join("absent.bitloom")).status()));
}

// Thousands of random mutations of a small file. Each must yield a clean error, or OK only when the
// mutation touched nothing the format covers (padding); then every tensor and the manifest must
// read back exactly as written.
TEST_F(CorruptionTest, RandomMutations) {
  std::mt19937_64 rng(20261127);
  // Bytes that matter: the header, every blob and the manifest. Mutations aim there most of the
  // time because the small test file is mostly padding.
  std::vector<std::pair<uint64_t, uint64_t>> covered = {{0, kHeaderSize},
                                                        {header_.manifest_offset, good_.size()}};
  for (const auto& t : manifest_.tensors()) covered.emplace_back(t.offset(), t.offset() + t.size());
  auto random_below = [&](uint64_t n) {
    return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng);
  };
  auto random_position = [&]() -> uint64_t {
    if (random_below(4) == 0) return random_below(good_.size());
    const auto& [begin, end] = covered[random_below(covered.size())];
    return begin + random_below(end - begin);
  };

  const std::string path = dir_.Join("mutant.bitloom");
  int ok_count = 0, error_count = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = good_;
    const int mutations = 1 + static_cast<int>(random_below(3));
    for (int m = 0; m < mutations; ++m) {
      switch (random_below(4)) {
        case 0:
        case 1:  // flip random bits of one byte
          bytes[std::min<uint64_t>(random_position(), bytes.size() - 1)] ^=
              static_cast<uint8_t>(1 + random_below(255));
          break;
        case 2:  // truncate
          bytes.resize(random_below(bytes.size()) + 1);
          break;
        case 3: {  // insert 1..16 random bytes
          const uint64_t at = std::min<uint64_t>(random_position(), bytes.size());
          std::vector<uint8_t> junk(1 + random_below(16));
          for (auto& b : junk) b = static_cast<uint8_t>(random_below(256));
          bytes.insert(bytes.begin() + static_cast<ptrdiff_t>(at), junk.begin(), junk.end());
          break;
        }
      }
    }
    WriteFileBytes(path, bytes);
    auto reader = ArtifactReader::Open(path, {.verify_checksums = true});
    if (!reader.ok()) {
      ++error_count;
      ASSERT_TRUE(absl::IsDataLoss(reader.status()) || absl::IsFailedPrecondition(reader.status()))
          << "iteration " << iter << ": " << reader.status();
      continue;
    }
    ++ok_count;
    ASSERT_EQ(bytes.size(), good_.size()) << "iteration " << iter;
    ASSERT_EQ((*reader)->manifest().SerializeAsString(), manifest_.SerializeAsString());
    for (const auto& t : manifest_.tensors()) {
      auto got = (*reader)->TensorBytes(t.name());
      ASSERT_TRUE(got.ok());
      ASSERT_TRUE(std::equal(got->begin(), got->end(), good_.begin() + t.offset()))
          << "iteration " << iter << ": tensor " << t.name() << " changed but verified";
    }
  }
  EXPECT_GT(error_count, 2000);
  EXPECT_GT(ok_count, 0);  // some mutations hit only padding
}

}  // namespace
}  // namespace bitloom::modelstore
