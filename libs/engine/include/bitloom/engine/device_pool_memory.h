// AllocateDevicePoolMemory: the VRAM pool's one device allocation (CUDA builds only: the function
// lives in bitloom::engine_cuda).
//
// Makes `device` current for the calling thread (and leaves it so), reads its free memory
// (cudaMemGetInfo), sizes the pool with ResolveVramBudget and cudaMalloc's it once; the returned
// PoolMemory cudaFree's it on destruction, on `device` whatever the caller's current device is.
// cudaMalloc returns 256-byte aligned memory, which the pool's offsets keep. Errors:
// INVALID_ARGUMENT for a bad budget or device, RESOURCE_EXHAUSTED when the budget exceeds what is
// free or cudaMalloc runs out, INTERNAL for other CUDA failures (no driver, no device).
// Thread-safe (no shared state).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "bitloom/engine/vram_pool.h"

namespace bitloom::engine {

absl::StatusOr<std::unique_ptr<PoolMemory>> AllocateDevicePoolMemory(const VramBudget& budget,
                                                                     int device = 0);

}  // namespace bitloom::engine
