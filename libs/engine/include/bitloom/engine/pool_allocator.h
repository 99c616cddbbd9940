// PoolAllocator: the bookkeeping of the VRAM pool (docs/ENGINE.md, "The VRAM pool"), over a plain
// offset range [0, capacity) with no memory behind it, so every placement decision is host code
// that unit tests can drive.
//
// Regions are carved best-fit: the smallest free extent that holds the request, the lowest offset
// among equals, so the same sequence of calls always yields the same offsets. Sizes and offsets are
// multiples of kPoolAlignment (256 bytes, enough for any vector load and for cudaMalloc-like
// alignment of every tensor placed at a region's start). Free() merges the region back with its
// free neighbours, so the free space is always a set of maximal extents. Each region carries its
// kind (weights, KV cache, workspace) and its owner (a model name), which the errors and the
// metrics use. Not thread-safe: VramPool wraps it with a lock.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitloom::engine {

inline constexpr uint64_t kPoolAlignment = 256;

// What a region holds; the metrics report bytes per kind.
enum class RegionKind : int {
  kWeights = 0,    // one model's tensors, laid out by PlanWeightUpload
  kKvCache = 1,    // one model's paged KV cache (PagedKvCache)
  kWorkspace = 2,  // activations and scratch of the forward pass
};
inline constexpr int kNumRegionKinds = 3;

// "weights", "kv_cache", "workspace": the metrics label and the word in error messages.
absl::string_view RegionKindName(RegionKind kind);

// One carved region: [offset, offset + size) of the pool.
struct PoolRegion {
  uint64_t id = 0;  // unique for the allocator's lifetime, never reused
  RegionKind kind = RegionKind::kWeights;
  std::string owner;  // the model it belongs to
  uint64_t offset = 0;
  uint64_t size = 0;  // the bytes asked, rounded up to kPoolAlignment
};

// A snapshot for the metrics and for error messages.
struct PoolUsage {
  uint64_t capacity = 0;
  std::array<uint64_t, kNumRegionKinds> used_by_kind{};  // indexed by RegionKind
  uint64_t free = 0;
  uint64_t largest_free_extent = 0;
  int num_regions = 0;
  int num_free_extents = 0;

  uint64_t used() const { return capacity - free; }
};

class PoolAllocator {
 public:
  // `capacity` is rounded down to kPoolAlignment.
  explicit PoolAllocator(uint64_t capacity);

  uint64_t capacity() const { return capacity_; }

  // Carves `bytes` (rounded up to kPoolAlignment) for `owner`. INVALID_ARGUMENT for 0 bytes;
  // RESOURCE_EXHAUSTED when no free extent is large enough, naming the kind, the owner, the bytes
  // asked, the bytes free and the largest free extent (fragmentation shows as free >= asked with a
  // smaller largest extent). The allocator is unchanged on error.
  absl::StatusOr<PoolRegion> Allocate(RegionKind kind, absl::string_view owner, uint64_t bytes);

  // Returns the region to the free space, merged with its free neighbours. NOT_FOUND for an id that
  // is not live (never allocated, or freed already).
  absl::Status Free(uint64_t region_id);

  // The live region `region_id`, or nullptr.
  const PoolRegion* Find(uint64_t region_id) const;
  // Live regions in offset order.
  std::vector<PoolRegion> Regions() const;
  // Free extents as (offset, size), in offset order.
  std::vector<std::pair<uint64_t, uint64_t>> FreeExtents() const;

  PoolUsage Usage() const;

 private:
  uint64_t capacity_;
  uint64_t next_id_ = 1;
  // offset -> size of each maximal free extent.
  std::map<uint64_t, uint64_t> free_;
  // id -> region.
  std::map<uint64_t, PoolRegion> regions_;
};

}  // namespace bitloom::engine
