#include "bitloom/engine/vram_pool.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bitloom::engine {
namespace {

class HostPoolMemory : public PoolMemory {
 public:
  HostPoolMemory(uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  ~HostPoolMemory() override { std::free(base_); }
  HostPoolMemory(const HostPoolMemory&) = delete;
  HostPoolMemory& operator=(const HostPoolMemory&) = delete;

  uint8_t* base() const override { return base_; }
  uint64_t size() const override { return size_; }
  bool on_device() const override { return false; }

 private:
  uint8_t* base_;
  uint64_t size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PoolMemory>> AllocateHostPoolMemory(uint64_t bytes) {
  const uint64_t size = bytes / kPoolAlignment * kPoolAlignment;
  // aligned_alloc wants a nonzero multiple of the alignment.
  void* base = std::aligned_alloc(kPoolAlignment, size == 0 ? kPoolAlignment : size);
  if (base == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("VRAM pool: cannot allocate ", size, " bytes of host memory"));
  }
  std::memset(base, 0, size);
  return std::make_unique<HostPoolMemory>(static_cast<uint8_t*>(base), size);
}

absl::StatusOr<uint64_t> ResolveVramBudget(const VramBudget& budget, uint64_t free_bytes) {
  const bool has_bytes = budget.bytes > 0;
  const bool has_fraction = budget.fraction_of_free != 0;
  if (has_bytes == has_fraction) {
    return absl::InvalidArgumentError("VRAM budget: set exactly one of bytes and fraction_of_free");
  }
  uint64_t bytes = budget.bytes;
  if (has_fraction) {
    if (!(budget.fraction_of_free > 0 && budget.fraction_of_free <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("VRAM budget: fraction_of_free ",
                                                     budget.fraction_of_free, " is not in (0, 1]"));
    }
    bytes = static_cast<uint64_t>(static_cast<long double>(free_bytes) * budget.fraction_of_free);
  } else if (bytes > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "VRAM budget of ", bytes, " bytes exceeds the ", free_bytes, " bytes free on the device"));
  }
  return bytes / kPoolAlignment * kPoolAlignment;
}

VramPool::VramPool(std::unique_ptr<PoolMemory> memory)
    : memory_(std::move(memory)), capacity_(memory_->size()), allocator_(capacity_) {}

absl::StatusOr<PoolRegion> VramPool::Allocate(RegionKind kind, absl::string_view owner,
                                              uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  return allocator_.Allocate(kind, owner, bytes);
}

absl::Status VramPool::Free(uint64_t region_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return allocator_.Free(region_id);
}

int VramPool::FreeOwner(absl::string_view owner) {
  std::lock_guard<std::mutex> lock(mu_);
  int freed = 0;
  for (const PoolRegion& region : allocator_.Regions()) {
    if (region.owner == owner && allocator_.Free(region.id).ok()) ++freed;
  }
  return freed;
}

std::vector<PoolRegion> VramPool::Regions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocator_.Regions();
}

PoolUsage VramPool::Usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocator_.Usage();
}

}  // namespace bitloom::engine
