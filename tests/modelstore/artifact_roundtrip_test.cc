// Writer -> reader round trips, and the writer's own error handling.
#include <algorithm>
#include <string>
#include <vector>

#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/modelstore/format.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace bitloom::modelstore {
namespace {

using testing::BaseManifest;
using testing::ListDir;
using testing::Meta;
using testing::PatternBytes;
using testing::ScratchDir;

TEST(ArtifactRoundTripTest, SeveralTensorsShapesAndCodecs) {
  ScratchDir dir;
  const std::string path = dir.Join("m.bitloom");
  const auto w = PatternBytes(4 * 33 * 17, 1);
  const auto h = PatternBytes(2 * 5, 2);
  const auto b = PatternBytes(2 * 4096, 3);  // exactly one page: next blob starts right after
  const auto s = PatternBytes(4, 4);
  const auto q = PatternBytes(1000, 5);
  {
    auto writer = ArtifactWriter::Create(path, dir.path());
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->AddTensor(Meta("w", v1::CODEC_F32, {33, 17}), w).ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("h", v1::CODEC_F16, {5}), h).ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("b", v1::CODEC_BF16, {64, 64}), b).ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("scalar", v1::CODEC_F32, {}), s).ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("empty", v1::CODEC_F16, {0, 8}), {}).ok());
    v1::TensorEntry qm = Meta("q", v1::CODEC_HADAMARD_SCALAR, {16, 128});
    qm.set_bits_per_weight(3.5f);
    qm.set_group_size(64);
    (*qm.mutable_params())["seed"] = "42";
    ASSERT_TRUE((*writer)->AddTensor(qm, q).ok());
    ASSERT_TRUE((*writer)->Finish(BaseManifest("rt")).ok());
  }
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"m.bitloom"});  // no temp file left

  auto reader = ArtifactReader::Open(path, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const ArtifactReader& r = **reader;
  EXPECT_EQ(r.header().format_version, kFormatVersion);
  EXPECT_EQ(r.header().data_offset, kDataOffset);
  EXPECT_EQ(r.manifest().quantizer_version(), "rt");
  EXPECT_EQ(r.manifest().config().architecture(), "llama");
  EXPECT_GT(r.manifest().created_unix_ms(), 0);
  ASSERT_EQ(r.manifest().tensors_size(), 6);
  auto expect_bytes = [&](const std::string& name, const std::vector<uint8_t>& want) {
    auto got = r.TensorBytes(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(std::equal(got->begin(), got->end(), want.begin(), want.end())) << name;
    const v1::TensorEntry* e = r.FindTensor(name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->offset() % kBlobAlignment, 0u) << name;
    // Zero-copy: the span points into the mapping.
    if (!got->empty()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data()) % kBlobAlignment, 0u);
    }
  };
  expect_bytes("w", w);
  expect_bytes("h", h);
  expect_bytes("b", b);
  expect_bytes("scalar", s);
  expect_bytes("empty", {});
  expect_bytes("q", q);
  const v1::TensorEntry* qe = r.FindTensor("q");
  EXPECT_FLOAT_EQ(qe->bits_per_weight(), 3.5f);
  EXPECT_EQ(qe->group_size(), 64u);
  EXPECT_EQ(qe->params().at("seed"), "42");
  EXPECT_EQ(r.FindTensor("b")->offset() + 8192, r.FindTensor("scalar")->offset());
  EXPECT_TRUE(absl::IsNotFound(r.TensorBytes("nope").status()));
  EXPECT_TRUE(r.VerifyChecksums().ok());
}

TEST(ArtifactRoundTripTest, LargeTensorStreamedInChunks) {
  ScratchDir dir;
  const std::string path = dir.Join("big.bitloom");
  const size_t kRows = 256, kCols = 1000;  // 512000 bytes of f16, streamed in odd-sized chunks
  const auto data = PatternBytes(kRows * kCols * 2, 9);
  auto writer = ArtifactWriter::Create(path, dir.path());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->AddTensor(Meta("first", v1::CODEC_F32, {3}), PatternBytes(12, 1)).ok());
  ASSERT_TRUE((*writer)->BeginTensor(Meta("big", v1::CODEC_F16, {kRows, kCols})).ok());
  for (size_t at = 0; at < data.size(); at += 12345) {
    const size_t n = std::min<size_t>(12345, data.size() - at);
    ASSERT_TRUE((*writer)->AppendTensorData(absl::MakeConstSpan(data.data() + at, n)).ok());
  }
  ASSERT_TRUE((*writer)->EndTensor().ok());
  ASSERT_TRUE((*writer)->Finish(BaseManifest()).ok());

  auto reader = ArtifactReader::Open(path, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto got = (*reader)->TensorBytes("big");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(std::equal(got->begin(), got->end(), data.begin(), data.end()));
  EXPECT_EQ((*reader)->FindTensor("big")->xxh3(), Xxh3(data));
}

TEST(ArtifactRoundTripTest, NoTensors) {
  ScratchDir dir;
  const std::string path = dir.Join("empty.bitloom");
  auto writer = ArtifactWriter::Create(path, dir.path());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Finish(BaseManifest()).ok());
  auto reader = ArtifactReader::Open(path, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().tensors_size(), 0);
  EXPECT_EQ((*reader)->header().manifest_offset, kDataOffset);
}

TEST(ArtifactWriterTest, RejectsBadTensorMetadataWithoutFailing) {
  ScratchDir dir;
  auto writer = ArtifactWriter::Create(dir.Join("x.bitloom"), dir.path());
  ASSERT_TRUE(writer.ok());
  ArtifactWriter& w = **writer;
  EXPECT_TRUE(
      absl::IsInvalidArgument(w.AddTensor(Meta("", v1::CODEC_F32, {1}), PatternBytes(4, 1))));
  EXPECT_TRUE(absl::IsInvalidArgument(
      w.AddTensor(Meta("u", v1::CODEC_UNSPECIFIED, {1}), PatternBytes(4, 1))));
  EXPECT_TRUE(absl::IsInvalidArgument(
      w.AddTensor(Meta("huge", v1::CODEC_F32, {uint64_t{1} << 40, uint64_t{1} << 40}), {})));
  ASSERT_TRUE(w.AddTensor(Meta("t", v1::CODEC_F32, {1}), PatternBytes(4, 1)).ok());
  const absl::Status dup = w.AddTensor(Meta("t", v1::CODEC_F32, {1}), PatternBytes(4, 1));
  EXPECT_TRUE(absl::IsInvalidArgument(dup));
  EXPECT_NE(dup.message().find("duplicate"), std::string::npos) << dup;
  v1::ArtifactManifest with_tensors = BaseManifest();
  with_tensors.add_tensors()->set_name("smuggled");
  EXPECT_TRUE(absl::IsInvalidArgument(w.Finish(with_tensors)));
  // None of the above broke the writer.
  ASSERT_TRUE(w.Finish(BaseManifest()).ok());
  EXPECT_FALSE(w.Finish(BaseManifest()).ok());  // already finished
  auto reader = ArtifactReader::Open(dir.Join("x.bitloom"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->manifest().tensors_size(), 1);
}

TEST(ArtifactWriterTest, WrongDenseSizeFailsTheWriterAndRemovesTheTempFile) {
  ScratchDir dir;
  const std::string path = dir.Join("x.bitloom");
  auto writer = ArtifactWriter::Create(path, dir.path());
  ASSERT_TRUE(writer.ok());
  const absl::Status short_blob =
      (*writer)->AddTensor(Meta("t", v1::CODEC_F32, {4}), PatternBytes(12, 1));
  EXPECT_TRUE(absl::IsInvalidArgument(short_blob)) << short_blob;
  EXPECT_NE(short_blob.message().find("needs 16 bytes, got 12"), std::string::npos) << short_blob;
  EXPECT_TRUE(ListDir(dir.path()).empty());
  EXPECT_FALSE((*writer)->AddTensor(Meta("u", v1::CODEC_F32, {1}), PatternBytes(4, 1)).ok());
  EXPECT_FALSE((*writer)->Finish(BaseManifest()).ok());
  EXPECT_TRUE(ListDir(dir.path()).empty());

  auto writer2 = ArtifactWriter::Create(path, dir.path());
  ASSERT_TRUE((*writer2)->BeginTensor(Meta("t", v1::CODEC_F16, {2})).ok());
  EXPECT_TRUE(absl::IsInvalidArgument((*writer2)->AppendTensorData(PatternBytes(6, 1))));
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(ArtifactWriterTest, StreamingMisuse) {
  ScratchDir dir;
  auto writer = ArtifactWriter::Create(dir.Join("x.bitloom"), dir.path());
  ASSERT_TRUE(writer.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition((*writer)->AppendTensorData(PatternBytes(4, 1))));
  EXPECT_TRUE(absl::IsFailedPrecondition((*writer)->EndTensor()));
  ASSERT_TRUE((*writer)->BeginTensor(Meta("a", v1::CODEC_F32, {1})).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition((*writer)->BeginTensor(Meta("b", v1::CODEC_F32, {1}))));
  EXPECT_TRUE(absl::IsFailedPrecondition((*writer)->Finish(BaseManifest())));
}

TEST(ArtifactWriterTest, AbandonedWriterLeavesNothing) {
  ScratchDir dir;
  const std::string path = dir.Join("x.bitloom");
  {
    auto writer = ArtifactWriter::Create(path, dir.path());
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->AddTensor(Meta("a", v1::CODEC_F32, {1000}), PatternBytes(4000, 1)).ok());
    ASSERT_TRUE((*writer)->BeginTensor(Meta("b", v1::CODEC_F32, {1000})).ok());
    ASSERT_TRUE((*writer)->AppendTensorData(PatternBytes(400, 2)).ok());
    EXPECT_EQ(ListDir(dir.path()).size(), 1u);  // the temp file
    EXPECT_TRUE(ListDir(dir.path())[0].starts_with("."));
  }
  EXPECT_TRUE(ListDir(dir.path()).empty());
  EXPECT_TRUE(absl::IsNotFound(ArtifactReader::Open(path).status()));

  auto writer = ArtifactWriter::Create(path, dir.path());
  ASSERT_TRUE(writer.ok());
  (*writer)->Abort();
  (*writer)->Abort();  // idempotent
  EXPECT_TRUE(ListDir(dir.path()).empty());
  EXPECT_FALSE((*writer)->Finish(BaseManifest()).ok());
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(ArtifactWriterTest, TempFileHasTheDocumentedShapeUntilFinish) {
  // Before Finish the header is all zeros, so even a crash that left the temp file in place would
  // never produce something a reader accepts.
  ScratchDir dir;
  auto writer = ArtifactWriter::Create(dir.Join("x.bitloom"), dir.path());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->AddTensor(Meta("a", v1::CODEC_F32, {2}), PatternBytes(8, 1)).ok());
  EXPECT_EQ((*writer)->bytes_written(), kDataOffset + 8);
  auto partial = ArtifactReader::Open((*writer)->temp_path());
  EXPECT_TRUE(absl::IsDataLoss(partial.status())) << partial.status();
}

TEST(ArtifactWriterTest, ReplaceExistingFalseRefusesToClobber) {
  ScratchDir dir;
  const std::string path = dir.Join("x.bitloom");
  testing::WriteSmallArtifact(path, dir.path(), 1);
  const auto before = testing::ReadFileBytes(path);
  auto writer = ArtifactWriter::Create(path, dir.path(), {.replace_existing = false});
  ASSERT_TRUE(writer.ok());
  EXPECT_TRUE(absl::IsAlreadyExists((*writer)->Finish(BaseManifest())));
  EXPECT_EQ(testing::ReadFileBytes(path), before);
  EXPECT_EQ(ListDir(dir.path()).size(), 1u);
}

}  // namespace
}  // namespace bitloom::modelstore
