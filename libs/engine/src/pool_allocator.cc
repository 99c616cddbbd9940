#include "bitloom/engine/pool_allocator.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace bitloom::engine {
namespace {

// Rounds up to kPoolAlignment; false when that overflows.
bool AlignUp(uint64_t bytes, uint64_t* out) {
  if (bytes > UINT64_MAX - (kPoolAlignment - 1)) return false;
  *out = (bytes + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
  return true;
}

}  // namespace

absl::string_view RegionKindName(RegionKind kind) {
  switch (kind) {
    case RegionKind::kWeights:
      return "weights";
    case RegionKind::kKvCache:
      return "kv_cache";
    case RegionKind::kWorkspace:
      return "workspace";
  }
  return "unknown";
}

PoolAllocator::PoolAllocator(uint64_t capacity)
    : capacity_(capacity / kPoolAlignment * kPoolAlignment) {
  if (capacity_ > 0) free_.emplace(0, capacity_);
}

absl::StatusOr<PoolRegion> PoolAllocator::Allocate(RegionKind kind, absl::string_view owner,
                                                   uint64_t bytes) {
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("VRAM pool: ", RegionKindName(kind), " region for '", owner, "' of 0 bytes"));
  }
  uint64_t size = 0;
  const bool representable = AlignUp(bytes, &size);
  // Best fit: the smallest extent that holds `size`; the map's offset order breaks ties by lowest
  // offset because only a strictly smaller extent replaces the current choice.
  auto best = free_.end();
  if (representable) {
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second >= size && (best == free_.end() || it->second < best->second)) best = it;
    }
  }
  if (best == free_.end()) {
    const PoolUsage usage = Usage();
    return absl::ResourceExhaustedError(
        absl::StrCat("VRAM pool exhausted: ", RegionKindName(kind), " region for '", owner,
                     "' needs ", bytes, " bytes; ", usage.free, " bytes free of ", capacity_,
                     ", largest free extent ", usage.largest_free_extent, " bytes"));
  }
  PoolRegion region;
  region.id = next_id_++;
  region.kind = kind;
  region.owner = std::string(owner);
  region.offset = best->first;
  region.size = size;
  const uint64_t rest = best->second - size;
  const uint64_t rest_offset = best->first + size;
  free_.erase(best);
  if (rest > 0) free_.emplace(rest_offset, rest);
  regions_.emplace(region.id, region);
  return region;
}

absl::Status PoolAllocator::Free(uint64_t region_id) {
  auto found = regions_.find(region_id);
  if (found == regions_.end()) {
    return absl::NotFoundError(absl::StrCat("VRAM pool: no live region with id ", region_id));
  }
  uint64_t offset = found->second.offset;
  uint64_t size = found->second.size;
  regions_.erase(found);
  // Merge with the free extent that ends where this region starts, and the one that starts where it
  // ends.
  auto next = free_.lower_bound(offset);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && next->first == offset + size) {
    size += next->second;
    free_.erase(next);
  }
  free_.emplace(offset, size);
  return absl::OkStatus();
}

const PoolRegion* PoolAllocator::Find(uint64_t region_id) const {
  auto found = regions_.find(region_id);
  return found == regions_.end() ? nullptr : &found->second;
}

std::vector<PoolRegion> PoolAllocator::Regions() const {
  std::vector<PoolRegion> out;
  out.reserve(regions_.size());
  for (const auto& [id, region] : regions_) out.push_back(region);
  std::sort(out.begin(), out.end(),
            [](const PoolRegion& a, const PoolRegion& b) { return a.offset < b.offset; });
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> PoolAllocator::FreeExtents() const {
  return {free_.begin(), free_.end()};
}

PoolUsage PoolAllocator::Usage() const {
  PoolUsage usage;
  usage.capacity = capacity_;
  for (const auto& [id, region] : regions_)
    usage.used_by_kind[static_cast<int>(region.kind)] += region.size;
  for (const auto& [offset, size] : free_) {
    usage.free += size;
    usage.largest_free_extent = std::max(usage.largest_free_extent, size);
  }
  usage.num_regions = static_cast<int>(regions_.size());
  usage.num_free_extents = static_cast<int>(free_.size());
  return usage;
}

}  // namespace bitloom::engine
