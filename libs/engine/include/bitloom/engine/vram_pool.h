// VramPool: inferd's GPU memory, allocated once at start and carved into named regions — each
// model's weights, its paged KV cache, activation workspace (docs/ENGINE.md, "The VRAM pool").
//
// The pool owns one PoolMemory (the single allocation: device memory from AllocateDevicePoolMemory
// in CUDA builds, or host memory from AllocateHostPoolMemory for the CPU tests) and places regions
// in it with a PoolAllocator (best-fit, 256-byte aligned, coalescing, deterministic). Regions come
// and go as models load and unload, several models side by side; nothing is allocated from the
// device after start, so serving a request never calls cudaMalloc. A request the pool cannot hold
// is RESOURCE_EXHAUSTED naming the region, the bytes asked, the bytes free and the largest free
// extent, never a crash. Usage() is the snapshot the metrics export. Thread-safe: loads, unloads
// and metric scrapes may run on different threads. Region pointers stay valid until the region is
// freed; the pool must outlive every user of its memory.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitloom/engine/pool_allocator.h"

namespace bitloom::engine {

// The one allocation behind a pool. Owns it; frees it on destruction.
class PoolMemory {
 public:
  virtual ~PoolMemory() = default;
  // Aligned to at least kPoolAlignment. A device pointer when on_device().
  virtual uint8_t* base() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool on_device() const = 0;
};

// `bytes` of host memory (zeroed), standing in for the device in tests and CPU builds.
// RESOURCE_EXHAUSTED when the host cannot provide it.
absl::StatusOr<std::unique_ptr<PoolMemory>> AllocateHostPoolMemory(uint64_t bytes);

// How much device memory the pool takes at start: a fixed budget, or a fraction of the memory the
// device reports free (what is left after the CUDA context and anything else on the GPU).
struct VramBudget {
  uint64_t bytes = 0;           // when > 0, exactly this many bytes
  double fraction_of_free = 0;  // otherwise this fraction (0, 1] of the free memory
};

// The pool size for `budget` on a device reporting `free_bytes` free: INVALID_ARGUMENT for a budget
// that sets neither or both fields or a fraction outside (0, 1]; RESOURCE_EXHAUSTED when a fixed
// budget exceeds the free memory. The result is rounded down to kPoolAlignment.
absl::StatusOr<uint64_t> ResolveVramBudget(const VramBudget& budget, uint64_t free_bytes);

class VramPool {
 public:
  explicit VramPool(std::unique_ptr<PoolMemory> memory);

  VramPool(const VramPool&) = delete;
  VramPool& operator=(const VramPool&) = delete;

  uint64_t capacity() const { return capacity_; }
  bool on_device() const { return memory_->on_device(); }

  // See PoolAllocator::Allocate. `owner` is the model the region belongs to.
  absl::StatusOr<PoolRegion> Allocate(RegionKind kind, absl::string_view owner, uint64_t bytes);
  // See PoolAllocator::Free.
  absl::Status Free(uint64_t region_id);
  // Frees every region of `owner` (a model's unload); returns how many.
  int FreeOwner(absl::string_view owner);

  // The first byte of `region` (a device pointer when on_device()).
  uint8_t* Data(const PoolRegion& region) const { return memory_->base() + region.offset; }

  std::vector<PoolRegion> Regions() const;
  PoolUsage Usage() const;

 private:
  std::unique_ptr<PoolMemory> memory_;
  uint64_t capacity_;
  mutable std::mutex mu_;
  PoolAllocator allocator_;  // guarded by mu_
};

}  // namespace bitloom::engine
