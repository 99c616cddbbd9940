// WeightUploadPlan over a small synthetic artifact: tensors placed in file order at 256-byte
// aligned, disjoint offsets; the region size; lookups; and the plan performed into a host pool
// region puts every blob at its offset byte for byte. Plans of another artifact and short regions
// are errors.
#include "bitloom/engine/weight_upload_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "bitloom/engine/vram_pool.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "synthetic_artifact.h"

namespace bitloom::engine {
namespace {

using ::testing::HasSubstr;

TEST(WeightUploadPlanTest, PlacesTensorsInFileOrderAligned) {
  auto artifact = SyntheticArtifact::Create(1);
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  auto reader = modelstore::ArtifactReader::Open(artifact->path());
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto plan = WeightUploadPlan::Build((*reader)->manifest());
  ASSERT_TRUE(plan.ok()) << plan.status();

  ASSERT_EQ(plan->tensors().size(), artifact->names().size());
  uint64_t end = 0, file_end = 0, blob_bytes = 0;
  for (size_t i = 0; i < plan->tensors().size(); ++i) {
    const WeightPlacement& p = plan->tensors()[i];
    EXPECT_EQ(p.name, artifact->names()[i]);  // the writer appends, so file order is write order
    EXPECT_EQ(p.offset % kPoolAlignment, 0u) << p.name;
    EXPECT_GE(p.offset, end) << p.name;
    EXPECT_LT(p.offset, end + kPoolAlignment) << p.name;  // no more padding than alignment needs
    EXPECT_GE(p.file_offset, file_end);
    const v1::TensorEntry* entry = (*reader)->FindTensor(p.name);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(p.bytes, entry->size());
    EXPECT_EQ(p.codec, entry->codec());
    EXPECT_EQ(plan->Find(p.name), &p);
    end = p.offset + p.bytes;
    file_end = p.file_offset + p.bytes;
    blob_bytes += p.bytes;
  }
  // 12, 70, 2, 16384, 6006 bytes at 0, 256, 512, 768, 17152.
  EXPECT_EQ(plan->tensors()[3].offset, 768u);
  EXPECT_EQ(plan->tensors()[4].offset, 17152u);
  EXPECT_EQ(plan->blob_bytes(), blob_bytes);
  EXPECT_EQ(plan->blob_bytes(), 12u + 70 + 2 + 16384 + 6006);
  EXPECT_EQ(plan->region_bytes(), 23296u);  // 17152 + 6006 = 23158, rounded up
  EXPECT_EQ(plan->Find("no.such.tensor"), nullptr);
}

TEST(WeightUploadPlanTest, CopyToHostRegionPutsEveryBlobAtItsOffset) {
  auto artifact = SyntheticArtifact::Create(2);
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  auto reader = modelstore::ArtifactReader::Open(artifact->path());
  ASSERT_TRUE(reader.ok());
  auto plan = WeightUploadPlan::Build((*reader)->manifest());
  ASSERT_TRUE(plan.ok());

  auto memory = AllocateHostPoolMemory(1 << 20);
  ASSERT_TRUE(memory.ok());
  VramPool pool(std::move(*memory));
  ASSERT_TRUE(pool.Allocate(RegionKind::kWorkspace, "other", 1000).ok());  // the region is not at 0
  auto region = pool.Allocate(RegionKind::kWeights, "m", plan->region_bytes());
  ASSERT_TRUE(region.ok());
  uint8_t* data = pool.Data(*region);
  std::memset(data, 0xEE, region->size);
  ASSERT_TRUE(CopyWeightsToHost(**reader, *plan, absl::MakeSpan(data, region->size)).ok());
  uint64_t end = 0;
  for (const WeightPlacement& p : plan->tensors()) {
    auto blob = (*reader)->TensorBytes(p.name);
    ASSERT_TRUE(blob.ok());
    EXPECT_EQ(std::memcmp(data + p.offset, blob->data(), blob->size()), 0) << p.name;
    for (uint64_t i = end; i < p.offset; ++i)
      ASSERT_EQ(data[i], 0xEE) << "padding written before " << p.name;
    end = p.offset + p.bytes;
  }

  absl::Status small =
      CopyWeightsToHost(**reader, *plan, absl::MakeSpan(data, plan->region_bytes() - 1));
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
}

TEST(WeightUploadPlanTest, PlanOfAnotherArtifactIsRejected) {
  auto artifact = SyntheticArtifact::Create(3);
  ASSERT_TRUE(artifact.ok());
  auto reader = modelstore::ArtifactReader::Open(artifact->path());
  ASSERT_TRUE(reader.ok());
  v1::ArtifactManifest manifest = (*reader)->manifest();
  manifest.mutable_tensors(1)->set_size(manifest.tensors(1).size() + 2);
  auto wrong_size = WeightUploadPlan::Build(manifest);
  ASSERT_TRUE(wrong_size.ok());
  std::vector<uint8_t> region(wrong_size->region_bytes());
  absl::Status s = CopyWeightsToHost(**reader, *wrong_size, absl::MakeSpan(region));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("layers.0.attn.q_proj.weight"));

  manifest = (*reader)->manifest();
  manifest.mutable_tensors(0)->set_name("missing");
  auto missing = WeightUploadPlan::Build(manifest);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(CopyWeightsToHost(**reader, *missing, absl::MakeSpan(region)).code(),
            absl::StatusCode::kFailedPrecondition);

  manifest = (*reader)->manifest();
  manifest.mutable_tensors(2)->set_name(manifest.tensors(0).name());
  EXPECT_EQ(WeightUploadPlan::Build(manifest).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WeightUploadPlanTest, EmptyManifestNeedsNoRegion) {
  auto plan = WeightUploadPlan::Build(v1::ArtifactManifest());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->region_bytes(), 0u);
  EXPECT_TRUE(plan->tensors().empty());
}

}  // namespace
}  // namespace bitloom::engine
