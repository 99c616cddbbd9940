// The VRAM pool's bookkeeping (PoolAllocator) and the pool over host memory: carving, alignment,
// best fit, coalescing, exhaustion and fragmentation messages, several models side by side, budget
// resolution, and a random workload whose regions and free extents always tile the pool exactly.
#include "bitloom/engine/vram_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "bitloom/engine/pool_allocator.h"

namespace bitloom::engine {
namespace {

using ::testing::HasSubstr;
using Extents = std::vector<std::pair<uint64_t, uint64_t>>;

// Regions and free extents, in offset order, cover [0, capacity) with no gap or overlap, and no two
// free extents touch (Free coalesced them).
void ExpectTiles(const PoolAllocator& pool) {
  std::vector<std::pair<uint64_t, uint64_t>> pieces;
  for (const PoolRegion& r : pool.Regions()) {
    EXPECT_EQ(r.offset % kPoolAlignment, 0u);
    EXPECT_EQ(r.size % kPoolAlignment, 0u);
    pieces.emplace_back(r.offset, r.size);
  }
  const Extents free = pool.FreeExtents();
  for (size_t i = 1; i < free.size(); ++i) {
    EXPECT_LT(free[i - 1].first + free[i - 1].second, free[i].first)
        << "free extents not coalesced";
  }
  pieces.insert(pieces.end(), free.begin(), free.end());
  std::sort(pieces.begin(), pieces.end());
  uint64_t at = 0;
  for (const auto& [offset, size] : pieces) {
    ASSERT_EQ(offset, at);
    at += size;
  }
  EXPECT_EQ(at, pool.capacity());
}

TEST(PoolAllocatorTest, CarvesAlignedRegionsInOrder) {
  PoolAllocator pool(10 * 1024 + 100);  // rounded down to 40 · 256
  EXPECT_EQ(pool.capacity(), 10240u);
  auto w = pool.Allocate(RegionKind::kWeights, "a", 1000);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->offset, 0u);
  EXPECT_EQ(w->size, 1024u);
  EXPECT_EQ(w->owner, "a");
  auto kv = pool.Allocate(RegionKind::kKvCache, "a", 256);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->offset, 1024u);
  auto ws = pool.Allocate(RegionKind::kWorkspace, "a", 1);
  ASSERT_TRUE(ws.ok());
  EXPECT_EQ(ws->offset, 1280u);
  EXPECT_EQ(ws->size, 256u);
  EXPECT_NE(w->id, kv->id);

  const PoolUsage usage = pool.Usage();
  EXPECT_EQ(usage.capacity, 10240u);
  EXPECT_EQ(usage.used_by_kind[static_cast<int>(RegionKind::kWeights)], 1024u);
  EXPECT_EQ(usage.used_by_kind[static_cast<int>(RegionKind::kKvCache)], 256u);
  EXPECT_EQ(usage.used_by_kind[static_cast<int>(RegionKind::kWorkspace)], 256u);
  EXPECT_EQ(usage.free, 10240u - 1536u);
  EXPECT_EQ(usage.used(), 1536u);
  EXPECT_EQ(usage.largest_free_extent, 10240u - 1536u);
  EXPECT_EQ(usage.num_regions, 3);
  ExpectTiles(pool);
}

TEST(PoolAllocatorTest, FreeCoalescesWithBothNeighbours) {
  PoolAllocator pool(4096);
  auto a = pool.Allocate(RegionKind::kWeights, "m", 1024);
  auto b = pool.Allocate(RegionKind::kWeights, "m", 1024);
  auto c = pool.Allocate(RegionKind::kWeights, "m", 1024);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_TRUE(pool.Free(b->id).ok());
  EXPECT_EQ(pool.FreeExtents(), (Extents{{1024, 1024}, {3072, 1024}}));
  ASSERT_TRUE(pool.Free(a->id).ok());  // merges with b's hole
  EXPECT_EQ(pool.FreeExtents(), (Extents{{0, 2048}, {3072, 1024}}));
  ASSERT_TRUE(pool.Free(c->id).ok());  // merges with both sides
  EXPECT_EQ(pool.FreeExtents(), (Extents{{0, 4096}}));
  EXPECT_EQ(pool.Usage().num_regions, 0);
  ExpectTiles(pool);
}

TEST(PoolAllocatorTest, BestFitPicksTheSmallestHoleThenTheLowestOffset) {
  PoolAllocator pool(16 * 256);
  std::vector<PoolRegion> r;
  for (uint64_t size : {512, 256, 256, 256, 256, 256, 256}) {
    auto region = pool.Allocate(RegionKind::kWeights, "m", size);
    ASSERT_TRUE(region.ok());
    r.push_back(*region);
  }
  // Holes: 512 at 0, 256 at 768, 256 at 1280; the tail: 2048 at 2048.
  ASSERT_TRUE(pool.Free(r[0].id).ok());
  ASSERT_TRUE(pool.Free(r[2].id).ok());
  ASSERT_TRUE(pool.Free(r[4].id).ok());
  auto small = pool.Allocate(RegionKind::kWorkspace, "m", 200);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->offset, 768u);  // the first of the two 256-byte holes, not the 512 one at 0
  auto mid = pool.Allocate(RegionKind::kWorkspace, "m", 300);
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->offset, 0u);  // 512 at 0 beats the tail
  auto large = pool.Allocate(RegionKind::kWorkspace, "m", 1000);
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(large->offset, 2048u);
  ExpectTiles(pool);
}

TEST(PoolAllocatorTest, ExhaustionNamesRegionBytesAskedAndFreeAndLeavesThePoolAlone) {
  PoolAllocator pool(4096);
  ASSERT_TRUE(pool.Allocate(RegionKind::kWeights, "llama", 3000).ok());
  const Extents before = pool.FreeExtents();
  auto kv = pool.Allocate(RegionKind::kKvCache, "llama", 2000);
  ASSERT_EQ(kv.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(kv.status().message(), HasSubstr("kv_cache region for 'llama'"));
  EXPECT_THAT(kv.status().message(), HasSubstr("needs 2000 bytes"));
  EXPECT_THAT(kv.status().message(), HasSubstr("1024 bytes free of 4096"));
  EXPECT_THAT(kv.status().message(), HasSubstr("largest free extent 1024 bytes"));
  EXPECT_EQ(pool.FreeExtents(), before);
  EXPECT_EQ(pool.Usage().num_regions, 1);

  // Sizes that overflow when rounded up are exhausted, not wrapped.
  auto huge = pool.Allocate(RegionKind::kWeights, "x", UINT64_MAX);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Allocate(RegionKind::kWeights, "x", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PoolAllocatorTest, FragmentationShowsAsFreeBytesWithoutAnExtent) {
  PoolAllocator pool(8 * 256);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(pool.Allocate(RegionKind::kWorkspace, "m", 256)->id);
  for (int i = 0; i < 8; i += 2) ASSERT_TRUE(pool.Free(ids[i]).ok());  // 4 separate 256-byte holes
  auto region = pool.Allocate(RegionKind::kWeights, "big", 512);
  ASSERT_EQ(region.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(region.status().message(), HasSubstr("needs 512 bytes; 1024 bytes free"));
  EXPECT_THAT(region.status().message(), HasSubstr("largest free extent 256 bytes"));
  EXPECT_EQ(pool.Usage().num_free_extents, 4);
}

TEST(PoolAllocatorTest, FreeOfUnknownOrFreedRegionIsNotFound) {
  PoolAllocator pool(1024);
  auto a = pool.Allocate(RegionKind::kWeights, "m", 256);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(pool.Free(a->id + 100).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(pool.Free(a->id).ok());
  EXPECT_EQ(pool.Free(a->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pool.Find(a->id), nullptr);
  // Ids are not reused.
  auto b = pool.Allocate(RegionKind::kWeights, "m", 256);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->id, a->id);
}

TEST(PoolAllocatorTest, EmptyPoolIsExhaustedAtOnce) {
  PoolAllocator pool(100);  // below one alignment unit
  EXPECT_EQ(pool.capacity(), 0u);
  EXPECT_EQ(pool.Allocate(RegionKind::kWeights, "m", 1).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// Random allocations and frees: the pool always tiles, and the same seed gives the same offsets.
std::vector<uint64_t> RandomWorkload(uint64_t seed) {
  PoolAllocator pool(1 << 20);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> live;
  std::vector<uint64_t> offsets;
  for (int step = 0; step < 3000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t bytes = 1 + rng() % (rng() % 4 == 0 ? 200000 : 5000);
      const auto kind = static_cast<RegionKind>(rng() % kNumRegionKinds);
      auto region = pool.Allocate(kind, "m", bytes);
      if (region.ok()) {
        live.push_back(region->id);
        offsets.push_back(region->offset);
        EXPECT_GE(region->size, bytes);
      } else {
        EXPECT_EQ(region.status().code(), absl::StatusCode::kResourceExhausted);
        EXPECT_LT(pool.Usage().largest_free_extent, bytes);
      }
    } else {
      const size_t i = rng() % live.size();
      EXPECT_TRUE(pool.Free(live[i]).ok());
      live.erase(live.begin() + static_cast<ptrdiff_t>(i));
    }
    if (step % 100 == 0) ExpectTiles(pool);
  }
  for (uint64_t id : live) EXPECT_TRUE(pool.Free(id).ok());
  EXPECT_EQ(pool.FreeExtents(), (Extents{{0, 1 << 20}}));
  const PoolUsage usage = pool.Usage();
  EXPECT_EQ(usage.free, usage.capacity);
  for (uint64_t used : usage.used_by_kind) EXPECT_EQ(used, 0u);
  return offsets;
}

TEST(PoolAllocatorTest, RandomWorkloadTilesAndIsDeterministic) {
  const std::vector<uint64_t> first = RandomWorkload(7);
  EXPECT_GT(first.size(), 1000u);
  EXPECT_EQ(RandomWorkload(7), first);
}

TEST(VramPoolTest, ModelsSideBySideLoadAndUnload) {
  auto memory = AllocateHostPoolMemory(64 * 1024);
  ASSERT_TRUE(memory.ok()) << memory.status();
  uint8_t* base = (*memory)->base();
  VramPool pool(std::move(*memory));
  EXPECT_FALSE(pool.on_device());
  EXPECT_EQ(pool.capacity(), 64u * 1024);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % kPoolAlignment, 0u);

  auto a_weights = pool.Allocate(RegionKind::kWeights, "a", 20000);
  auto a_kv = pool.Allocate(RegionKind::kKvCache, "a", 8000);
  auto b_weights = pool.Allocate(RegionKind::kWeights, "b", 16000);
  auto b_kv = pool.Allocate(RegionKind::kKvCache, "b", 8000);
  ASSERT_TRUE(a_weights.ok() && a_kv.ok() && b_weights.ok() && b_kv.ok());
  EXPECT_EQ(pool.Data(*b_weights), base + b_weights->offset);
  // Regions are real, disjoint memory.
  std::fill(pool.Data(*a_weights), pool.Data(*a_weights) + a_weights->size, 0xA1);
  std::fill(pool.Data(*b_weights), pool.Data(*b_weights) + b_weights->size, 0xB2);
  EXPECT_EQ(*pool.Data(*a_weights), 0xA1);
  EXPECT_EQ(*(pool.Data(*a_weights) + a_weights->size - 1), 0xA1);

  // A third model does not fit until "a" unloads; it then takes a's space.
  auto c = pool.Allocate(RegionKind::kWeights, "c", 25000);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("weights region for 'c'"));
  EXPECT_EQ(pool.FreeOwner("a"), 2);
  EXPECT_EQ(pool.FreeOwner("a"), 0);
  c = pool.Allocate(RegionKind::kWeights, "c", 25000);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->offset, 0u);
  const PoolUsage usage = pool.Usage();
  EXPECT_EQ(usage.used_by_kind[static_cast<int>(RegionKind::kWeights)], 16128u + 25088u);
  EXPECT_EQ(usage.used_by_kind[static_cast<int>(RegionKind::kKvCache)], 8192u);
  EXPECT_EQ(pool.Regions().size(), 3u);
  EXPECT_EQ(pool.FreeOwner("b"), 2);
  EXPECT_TRUE(pool.Free(c->id).ok());
  EXPECT_EQ(pool.Usage().free, pool.capacity());
}

TEST(VramPoolTest, ConcurrentLoadsAndScrapesKeepTheBooks) {
  auto memory = AllocateHostPoolMemory(1 << 20);
  ASSERT_TRUE(memory.ok());
  VramPool pool(std::move(*memory));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 500; ++i) {
        auto region = pool.Allocate(RegionKind::kWorkspace, "m", 1 + rng() % 8000);
        (void)pool.Usage();
        if (region.ok()) {
          EXPECT_TRUE(pool.Free(region->id).ok());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(pool.Usage().free, pool.capacity());
  EXPECT_EQ(pool.Usage().num_free_extents, 1);
}

TEST(VramBudgetTest, ResolvesBytesOrFraction) {
  EXPECT_EQ(*ResolveVramBudget({.bytes = 1000}, 1 << 20), 768u);
  EXPECT_EQ(*ResolveVramBudget({.fraction_of_free = 0.5}, 1 << 20), 1u << 19);
  EXPECT_EQ(*ResolveVramBudget({.fraction_of_free = 1.0}, 1000), 768u);
  EXPECT_EQ(ResolveVramBudget({.bytes = 2 << 20}, 1 << 20).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ResolveVramBudget({}, 1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveVramBudget({.bytes = 1, .fraction_of_free = 0.5}, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveVramBudget({.fraction_of_free = 1.5}, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveVramBudget({.fraction_of_free = -0.1}, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitloom::engine
