// The device inferd serves on: its --device flag (BITLOOM_INFERD_DEVICE), resolved once at start-up,
// the GPU's VRAM pool, and the GPU engine each LoadModel makes in it.
//
//   auto  the GPU when this build has the CUDA engine and a GPU is visible, else the CPU
//   cpu   the CPU engine (fp32 weights and KV cache in host memory)
//   gpu   the GPU engine (engine::GpuDecoderModel in one VramPool); inferd refuses to start
//         without one
//
// The GPU half exists only in builds with CUDA (serving_device_gpu.cc; serving_device_cpu_only.cc
// otherwise), so this header includes no CUDA header. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "bitloom/engine/vram_pool.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/v1/inference.pb.h"
#include "load_options.h"
#include "memory_budget.h"
#include "sequence_engine.h"

namespace bitloom::inferd {

enum class ServingDevice { kCpu, kGpu };

// INVALID_ARGUMENT for a value other than auto, cpu or gpu; FAILED_PRECONDITION for gpu when the
// build has no CUDA engine or no GPU is visible.
absl::StatusOr<ServingDevice> ResolveServingDevice(std::string_view flag);

// The VRAM pool of GPU 0, allocated once: `budget` bytes, or its fraction of the memory the device
// reports free. Fills `device` (name, "cuda", total memory, compute capability). RESOURCE_EXHAUSTED
// when the budget does not fit; FAILED_PRECONDITION without the CUDA engine.
absl::StatusOr<std::unique_ptr<engine::VramPool>> CreateDevicePool(const MemoryBudget& budget,
                                                                   v1::DeviceInfo* device);

// Uploads `artifact` into `pool` as options.model_id (regions named after it) and returns its
// engine: `slots` sequences of options.context_length tokens, their KV cache reserved in full
// (slots · ceil(context_length / kv_page_tokens) fp16 pages), decoded min(slots, 64) per forward
// pass. With `sample_on_device` the decode steps sample on the GPU (GpuSequenceEngine), which adds
// the sampler's scratch and 8·vocab bytes of token counts per slot to the workspace; without it
// every step's logits come to the host. RESOURCE_EXHAUSTED (naming the pool's capacity, free bytes
// and largest free extent) when a region does not fit; nothing stays allocated on error. The
// artifact is needed only during the call.
// `regions` receives the bytes of the model's three regions.
struct GpuRegionBytes {
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t workspace = 0;
};
absl::StatusOr<std::unique_ptr<SequenceEngine>> LoadGpuEngine(const modelstore::ArtifactReader& artifact,
                                                              engine::VramPool* pool,
                                                              const LoadOptions& options, int slots,
                                                              bool sample_on_device, GpuRegionBytes* regions);

namespace internal {
// Defined by serving_device_gpu.cc or serving_device_cpu_only.cc.
bool GpuBuilt();
bool GpuVisible();
}  // namespace internal

}  // namespace bitloom::inferd
