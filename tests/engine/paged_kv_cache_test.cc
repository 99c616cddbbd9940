// PagedKvCache: the region layout (pages that fit, array offsets, alignment), page accounting as
// sequences grow, shrink and leave, deterministic assignment, errors that leave the cache
// unchanged, admission, block-table rows, and a random workload that must end with every page free
// and never lets two cached tokens share an address.
#include "bitloom/engine/paged_kv_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "bitloom/engine/vram_pool.h"

namespace bitloom::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// 2 layers, 2 kv heads, head_dim 64, 16 tokens a page: a 4096-byte page per array.
KvPageFormat SmallFormat() {
  return {.num_layers = 2, .num_kv_heads = 2, .head_dim = 64, .page_size = 16};
}

PagedKvCache MakeCache(int pages, int max_seq_len = 1024, uint8_t* base = nullptr) {
  auto bytes = KvRegionBytes(SmallFormat(), pages);
  EXPECT_TRUE(bytes.ok());
  auto cache = PagedKvCache::Create(SmallFormat(), base, *bytes, max_seq_len);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

TEST(KvPageFormatTest, SizesAndValidation) {
  const KvPageFormat f = SmallFormat();
  EXPECT_TRUE(f.Validate().ok());
  EXPECT_EQ(f.slot_bytes(), 256u);
  EXPECT_EQ(f.page_bytes(), 4096u);
  EXPECT_EQ(KvDtypeBytes(KvDtype::kF16), 2);
  EXPECT_EQ(KvDtypeName(KvDtype::kF16), "f16");
  KvPageFormat bad = f;
  bad.page_size = 12;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("page_size = 12"));
  bad = f;
  bad.num_kv_heads = 0;
  EXPECT_THAT(bad.Validate().message(), HasSubstr("num_kv_heads"));
  EXPECT_EQ(PagedKvCache::Create(bad, nullptr, 1 << 20, 64).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvRegionLayoutTest, PagesFitTheRegionAndArraysAreAligned) {
  const KvPageFormat f = SmallFormat();
  auto layout = LayoutKvRegion(f, 4 * 10 * 4096 + 4000);  // slack below one page per array
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->num_pages, 10);
  EXPECT_EQ(layout->array_stride, 40960u);
  EXPECT_EQ(layout->key_offset(0), 0u);
  EXPECT_EQ(layout->value_offset(0), 40960u);
  EXPECT_EQ(layout->key_offset(1), 81920u);
  EXPECT_EQ(layout->value_offset(1), 122880u);
  EXPECT_EQ(layout->used_bytes(), 163840u);

  // A page of 192 bytes (not a multiple of 256): arrays still start 256-aligned, and the region
  // sized for n pages holds at least n and never needs more than it has.
  const KvPageFormat odd{.num_layers = 3, .num_kv_heads = 1, .head_dim = 24, .page_size = 4};
  EXPECT_EQ(odd.page_bytes(), 192u);
  for (int n = 1; n < 50; ++n) {
    auto bytes = KvRegionBytes(odd, n);
    ASSERT_TRUE(bytes.ok());
    auto l = LayoutKvRegion(odd, *bytes);
    ASSERT_TRUE(l.ok());
    EXPECT_GE(l->num_pages, n);
    EXPECT_EQ(l->array_stride % kPoolAlignment, 0u);
    EXPECT_GE(l->array_stride, static_cast<uint64_t>(l->num_pages) * odd.page_bytes());
    EXPECT_LE(l->used_bytes(), *bytes);
  }
  auto empty = PagedKvCache::Create(f, nullptr, 4 * 4096 - 1, 64);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(PagedKvCacheTest, GrowsPageByPageAndReusesReleasedPagesInOrder) {
  PagedKvCache cache = MakeCache(8);
  EXPECT_EQ(cache.num_pages(), 8);
  EXPECT_EQ(cache.pages_free(), 8);
  EXPECT_EQ(cache.max_pages_per_seq(), 64);

  ASSERT_TRUE(cache.Reserve(1, 1).ok());
  EXPECT_THAT(cache.Pages(1), ElementsAre(0));
  ASSERT_TRUE(cache.Reserve(1, 16).ok());  // still one page
  EXPECT_THAT(cache.Pages(1), ElementsAre(0));
  ASSERT_TRUE(cache.Reserve(1, 17).ok());
  EXPECT_THAT(cache.Pages(1), ElementsAre(0, 1));
  EXPECT_EQ(cache.Length(1), 17);
  ASSERT_TRUE(cache.Reserve(2, 5).ok());
  EXPECT_THAT(cache.Pages(2), ElementsAre(2));
  EXPECT_EQ(cache.pages_used(), 3);
  EXPECT_EQ(cache.num_sequences(), 2);

  ASSERT_TRUE(cache.Release(1).ok());
  EXPECT_EQ(cache.pages_used(), 1);
  EXPECT_FALSE(cache.Contains(1));
  EXPECT_EQ(cache.Release(1).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cache.Reserve(3, 40).ok());
  EXPECT_THAT(cache.Pages(3), ElementsAre(0, 1, 3));  // the released pages first, in their order

  ASSERT_TRUE(cache.Truncate(3, 16).ok());
  EXPECT_THAT(cache.Pages(3), ElementsAre(0));
  EXPECT_EQ(cache.Length(3), 16);
  ASSERT_TRUE(cache.Reserve(3, 33).ok());
  EXPECT_THAT(cache.Pages(3), ElementsAre(0, 1, 3));
  EXPECT_EQ(cache.Truncate(3, 34).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.Truncate(9, 0).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cache.Truncate(3, 0).ok());
  EXPECT_TRUE(cache.Contains(3));
  EXPECT_TRUE(cache.Pages(3).empty());
  ASSERT_TRUE(cache.Release(3).ok());
  ASSERT_TRUE(cache.Release(2).ok());
  EXPECT_EQ(cache.pages_used(), 0);
  EXPECT_EQ(cache.num_sequences(), 0);
}

TEST(PagedKvCacheTest, ExhaustionLeavesTheCacheUnchanged) {
  PagedKvCache cache = MakeCache(4);
  ASSERT_TRUE(cache.Reserve(1, 40).ok());  // 3 pages
  const std::vector<int32_t> pages(cache.Pages(1).begin(), cache.Pages(1).end());
  absl::Status grow = cache.Reserve(1, 80);  // needs 2 more, 1 free
  ASSERT_EQ(grow.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(grow.message(),
              HasSubstr("sequence 1 needs 2 more pages for 80 tokens; 1 of 4 pages free"));
  EXPECT_EQ(cache.Length(1), 40);
  EXPECT_EQ(std::vector<int32_t>(cache.Pages(1).begin(), cache.Pages(1).end()), pages);
  EXPECT_EQ(cache.pages_free(), 1);

  absl::Status fresh = cache.Reserve(2, 33);
  ASSERT_EQ(fresh.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(cache.Contains(2));
  EXPECT_EQ(cache.pages_free(), 1);
  ASSERT_TRUE(cache.Reserve(2, 16).ok());
  EXPECT_EQ(cache.pages_free(), 0);
}

TEST(PagedKvCacheTest, LengthLimitsAreInvalidArguments) {
  PagedKvCache cache = MakeCache(64, /*max_seq_len=*/100);
  EXPECT_EQ(cache.max_pages_per_seq(), 7);
  absl::Status s = cache.Reserve(1, 101);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("max_seq_len = 100"));
  EXPECT_FALSE(cache.Contains(1));
  ASSERT_TRUE(cache.Reserve(1, 100).ok());
  EXPECT_EQ(cache.Pages(1).size(), 7u);
  EXPECT_EQ(cache.Reserve(1, 50).code(),
            absl::StatusCode::kInvalidArgument);  // Reserve never shrinks
  EXPECT_EQ(cache.Reserve(2, -1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagedKvCacheTest, BlockTableRowsArePaddedWithPageZero) {
  PagedKvCache cache = MakeCache(8, /*max_seq_len=*/64);
  ASSERT_TRUE(cache.Reserve(1, 20).ok());
  ASSERT_TRUE(cache.Reserve(2, 40).ok());
  std::vector<int32_t> table(2 * cache.max_pages_per_seq(), -7);
  auto rows = absl::MakeSpan(table);
  ASSERT_TRUE(cache.FillBlockTable(1, rows.subspan(0, 4)).ok());
  ASSERT_TRUE(cache.FillBlockTable(2, rows.subspan(4, 4)).ok());
  EXPECT_THAT(table, ElementsAre(0, 1, 0, 0, 2, 3, 4, 0));
  std::vector<int32_t> short_row(2);
  EXPECT_EQ(cache.FillBlockTable(2, absl::MakeSpan(short_row)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.FillBlockTable(5, rows).code(), absl::StatusCode::kNotFound);
}

TEST(PagedKvCacheTest, AdmissionCountsPagesFreeAndPromised) {
  PagedKvCache cache = MakeCache(10, /*max_seq_len=*/256);
  EXPECT_TRUE(cache.CanAdmit(100, 60));  // 160 tokens: 10 pages
  EXPECT_FALSE(cache.CanAdmit(100, 61));
  EXPECT_EQ(cache.CheckAdmission(100, 61).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache.CheckAdmission(200, 57).code(),
            absl::StatusCode::kInvalidArgument);  // beyond the context
  EXPECT_THAT(cache.CheckAdmission(200, 57).message(), HasSubstr("context of 256 tokens"));
  ASSERT_TRUE(cache.Reserve(1, 48).ok());  // 3 pages
  EXPECT_TRUE(cache.CanAdmit(100, 12));    // 7 pages
  EXPECT_FALSE(cache.CanAdmit(100, 13));
  EXPECT_TRUE(cache.CanAdmit(50, 14, /*pages_promised=*/3));
  absl::Status s = cache.CheckAdmission(50, 15, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("needs 5 pages; 4 of 10 pages are free"));
}

TEST(PagedKvCacheTest, ArrayPointersFollowTheRegion) {
  auto memory = AllocateHostPoolMemory(1 << 20);
  ASSERT_TRUE(memory.ok());
  VramPool pool(std::move(*memory));
  auto region = pool.Allocate(RegionKind::kKvCache, "m", *KvRegionBytes(SmallFormat(), 6));
  ASSERT_TRUE(region.ok());
  uint8_t* base = pool.Data(*region);
  auto cache = PagedKvCache::Create(SmallFormat(), base, region->size, 128);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->num_pages(), 6);
  EXPECT_EQ(cache->Keys(0), base);
  EXPECT_EQ(cache->Values(0), base + 6 * 4096);
  EXPECT_EQ(cache->Keys(1), base + 2 * 6 * 4096);
  EXPECT_EQ(cache->Values(1) + 6 * 4096, base + region->size);
  PagedKvCache no_base = MakeCache(6);
  EXPECT_EQ(no_base.Keys(1), nullptr);
  EXPECT_EQ(no_base.KeyOffset(1), 2u * 6 * 4096);
}

// Random reserve / truncate / release over many sequences. After each step the sequences' pages
// are disjoint, match their lengths, and with the free pages make up every page; every cached token
// (sequence, position) has its own K address inside its layer's array. At the end all pages are
// free.
TEST(PagedKvCacheTest, RandomWorkloadNeverLeaksOrSharesPages) {
  const KvPageFormat f{.num_layers = 3, .num_kv_heads = 1, .head_dim = 8, .page_size = 4};
  auto cache_or = PagedKvCache::Create(f, nullptr, *KvRegionBytes(f, 64), 96);
  ASSERT_TRUE(cache_or.ok());
  PagedKvCache& cache = *cache_or;
  std::mt19937_64 rng(11);
  std::map<SequenceId, int> lengths;  // the model of the cache
  int exhausted = 0;
  for (int step = 0; step < 5000; ++step) {
    const SequenceId seq = rng() % 24;
    const int op = static_cast<int>(rng() % 10);
    const int length = lengths.contains(seq) ? lengths[seq] : 0;
    if (op < 6) {
      const int target = std::min(96, length + static_cast<int>(rng() % 20));
      const int free_before = cache.pages_free();
      absl::Status s = cache.Reserve(seq, target);
      if (s.ok()) {
        lengths[seq] = target;
      } else {
        ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
        EXPECT_EQ(cache.pages_free(), free_before);
        EXPECT_EQ(cache.Length(seq), length);
        EXPECT_EQ(cache.Contains(seq), lengths.contains(seq));
        ++exhausted;
      }
    } else if (op < 8 && lengths.contains(seq)) {
      const int target = length == 0 ? 0 : static_cast<int>(rng() % (length + 1));
      ASSERT_TRUE(cache.Truncate(seq, target).ok());
      lengths[seq] = target;
    } else if (lengths.contains(seq)) {
      ASSERT_TRUE(cache.Release(seq).ok());
      lengths.erase(seq);
    }
    std::set<int32_t> owned;
    int used = 0;
    for (const auto& [s, len] : lengths) {
      ASSERT_EQ(cache.Length(s), len);
      ASSERT_EQ(static_cast<int>(cache.Pages(s).size()), cache.PagesFor(len));
      for (int32_t page : cache.Pages(s)) {
        ASSERT_GE(page, 0);
        ASSERT_LT(page, cache.num_pages());
        ASSERT_TRUE(owned.insert(page).second) << "page " << page << " owned twice";
      }
      used += static_cast<int>(cache.Pages(s).size());
    }
    ASSERT_EQ(cache.pages_used(), used);
    ASSERT_EQ(cache.num_sequences(), static_cast<int>(lengths.size()));
    if (step % 250 == 0) {
      std::set<uint64_t> addresses;
      for (const auto& [s, len] : lengths) {
        for (int t = 0; t < len; ++t) {
          const int32_t page = cache.Pages(s)[t / f.page_size];
          const uint64_t address = cache.KeyOffset(2) + page * f.page_bytes() +
                                   static_cast<uint64_t>(t % f.page_size) * f.slot_bytes();
          ASSERT_LT(address + f.slot_bytes(), cache.ValueOffset(2) + 1);
          ASSERT_TRUE(addresses.insert(address).second);
        }
      }
    }
  }
  EXPECT_GT(exhausted, 0);  // the workload reached the limit
  for (const auto& [s, len] : lengths) ASSERT_TRUE(cache.Release(s).ok());
  EXPECT_EQ(cache.pages_used(), 0);
  EXPECT_EQ(cache.pages_free(), cache.num_pages());
  EXPECT_EQ(cache.num_sequences(), 0);
}

}  // namespace
}  // namespace bitloom::engine
