// The device side of the VRAM pool: a pool cudaMalloc'ed from a budget, and a synthetic artifact
// uploaded into a weights region by both paths (the host-registered mapping, and pinned staging in
// chunks smaller than some tensors) and read back byte-equal, with the alignment padding untouched.
// Skips when no GPU is present (CI).
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bitloom/engine/device_pool_memory.h"
#include "bitloom/engine/paged_kv_cache.h"
#include "bitloom/engine/vram_pool.h"
#include "bitloom/engine/weight_upload.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "synthetic_artifact.h"

namespace bitloom::engine {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)"

TEST(DevicePoolMemoryTest, AllocatesTheBudgetOnceAndRejectsTooMuch) {
  SKIP_WITHOUT_GPU();
  auto memory = AllocateDevicePoolMemory({.bytes = (64u << 20) + 100});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_TRUE((*memory)->on_device());
  EXPECT_EQ((*memory)->size(), 64u << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*memory)->base()) % kPoolAlignment, 0u);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, (*memory)->base()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);

  auto fraction = AllocateDevicePoolMemory({.fraction_of_free = 0.01});
  ASSERT_TRUE(fraction.ok()) << fraction.status();
  EXPECT_GT((*fraction)->size(), 0u);

  auto too_much = AllocateDevicePoolMemory({.bytes = uint64_t{1} << 50});
  EXPECT_EQ(too_much.status().code(), absl::StatusCode::kResourceExhausted) << too_much.status();
  EXPECT_EQ(AllocateDevicePoolMemory({.bytes = 1 << 20}, 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

struct UploadCase {
  const char* label;
  WeightUploadOptions options;
};

class WeightUploadTest : public ::testing::TestWithParam<UploadCase> {};

TEST_P(WeightUploadTest, ReadsBackByteEqual) {
  SKIP_WITHOUT_GPU();
  auto artifact = SyntheticArtifact::Create(42);
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  auto reader = modelstore::ArtifactReader::Open(artifact->path());
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto plan = WeightUploadPlan::Build((*reader)->manifest());
  ASSERT_TRUE(plan.ok()) << plan.status();

  auto memory = AllocateDevicePoolMemory({.bytes = 16u << 20});
  ASSERT_TRUE(memory.ok()) << memory.status();
  VramPool pool(std::move(*memory));
  ASSERT_TRUE(pool.Allocate(RegionKind::kWorkspace, "other", 5000).ok());  // the region is not at 0
  auto region = pool.Allocate(RegionKind::kWeights, "synthetic", plan->region_bytes());
  ASSERT_TRUE(region.ok()) << region.status();
  uint8_t* device = pool.Data(*region);
  ASSERT_EQ(cudaMemset(device, 0xEE, region->size), cudaSuccess);

  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  auto stats = UploadWeights(**reader, *plan, device, region->size, stream, GetParam().options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->bytes, plan->blob_bytes());
  EXPECT_EQ(stats->num_tensors, static_cast<int>(plan->tensors().size()));
  EXPECT_GT(stats->seconds, 0);
  if (!GetParam().options.allow_host_register) {
    EXPECT_FALSE(stats->host_registered);
  }
  RecordProperty("host_registered", stats->host_registered ? "true" : "false");
  std::printf("[%s] host_registered=%d seconds=%.6f bytes=%llu\n", GetParam().label,
              stats->host_registered ? 1 : 0, stats->seconds,
              static_cast<unsigned long long>(stats->bytes));

  std::vector<uint8_t> back(region->size);
  ASSERT_EQ(cudaMemcpy(back.data(), device, back.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  uint64_t end = 0;
  for (const WeightPlacement& p : plan->tensors()) {
    auto blob = (*reader)->TensorBytes(p.name);
    ASSERT_TRUE(blob.ok());
    EXPECT_EQ(std::memcmp(back.data() + p.offset, blob->data(), blob->size()), 0) << p.name;
    for (uint64_t i = end; i < p.offset; ++i)
      ASSERT_EQ(back[i], 0xEE) << "padding written before " << p.name;
    end = p.offset + p.bytes;
  }
  for (uint64_t i = end; i < back.size(); ++i)
    ASSERT_EQ(back[i], 0xEE) << "written past the last tensor";

  // A region too small is refused before anything is copied.
  auto small =
      UploadWeights(**reader, *plan, device, plan->region_bytes() - 1, stream, GetParam().options);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, WeightUploadTest,
    ::testing::Values(UploadCase{"registered", {}},
                      UploadCase{"staging_1000",
                                 {.allow_host_register = false, .staging_chunk_bytes = 1000}},
                      UploadCase{"staging_64MiB", {.allow_host_register = false}}),
    [](const ::testing::TestParamInfo<UploadCase>& param_info) {
      return std::string(param_info.param.label);
    });

TEST(DeviceKvCacheTest, ArraysLieInsideTheDeviceRegion) {
  SKIP_WITHOUT_GPU();
  auto memory = AllocateDevicePoolMemory({.bytes = 8u << 20});
  ASSERT_TRUE(memory.ok()) << memory.status();
  VramPool pool(std::move(*memory));
  const KvPageFormat format{.num_layers = 4, .num_kv_heads = 2, .head_dim = 64, .page_size = 16};
  auto region = pool.Allocate(RegionKind::kKvCache, "m", 4u << 20);
  ASSERT_TRUE(region.ok());
  auto cache = PagedKvCache::Create(format, pool.Data(*region), region->size, 2048);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->num_pages(), 128);  // 4 MiB / 8 arrays / 4096-byte pages
  // The last byte of the last V array is writable device memory of the region.
  uint8_t* last = cache->Values(3) + cache->layout().array_stride - 1;
  ASSERT_LE(last, pool.Data(*region) + region->size - 1);
  ASSERT_EQ(cudaMemset(cache->Keys(0), 0, cache->layout().used_bytes()), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace bitloom::engine
