// The GPU half of serving_device.h, in builds with the CUDA engine (bitloom::engine_cuda).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/engine/device_pool_memory.h"
#include "bitloom/engine/gpu_decoder_model.h"
#include "gpu_sequence_engine.h"
#include "serving_device.h"

namespace bitloom::inferd {

absl::StatusOr<std::unique_ptr<engine::VramPool>> CreateDevicePool(const MemoryBudget& budget,
                                                                   v1::DeviceInfo* device) {
  const engine::VramBudget vram{.bytes = budget.fraction > 0 ? 0 : budget.bytes,
                                .fraction_of_free = budget.fraction};
  absl::StatusOr<std::unique_ptr<engine::PoolMemory>> memory = engine::AllocateDevicePoolMemory(vram, 0);
  if (!memory.ok()) {
    return absl::Status(memory.status().code(), absl::StrCat("--vram_budget: ", memory.status().message()));
  }
  cudaDeviceProp props{};
  if (cudaGetDeviceProperties(&props, 0) == cudaSuccess) {
    device->set_name(props.name);
    device->set_total_memory_bytes(props.totalGlobalMem);
    device->set_compute_capability(absl::StrCat(props.major, ".", props.minor));
  }
  device->set_kind("cuda");
  return std::make_unique<engine::VramPool>(*std::move(memory));
}

absl::StatusOr<std::unique_ptr<SequenceEngine>> LoadGpuEngine(const modelstore::ArtifactReader& artifact,
                                                              engine::VramPool* pool,
                                                              const LoadOptions& options, int slots,
                                                              bool sample_on_device, GpuRegionBytes* regions) {
  const int pages_per_sequence =
      static_cast<int>((options.context_length + options.kv_page_tokens - 1) / options.kv_page_tokens);
  engine::GpuModelOptions gpu;
  gpu.model_id = options.model_id;
  gpu.max_batch = std::min(slots, engine::kGpuMaxBatch);
  gpu.max_seq_len = static_cast<int>(options.context_length);
  gpu.kv_pages = pages_per_sequence * slots;
  gpu.page_size = static_cast<int>(options.kv_page_tokens);
  // Decode steps sample on the GPU (GpuSequenceEngine::DecodeAndSample), with token counts for the
  // penalties of every slot; without sampling on the GPU, neither is reserved.
  gpu.enable_sampling = sample_on_device;
  gpu.token_count_sequences = sample_on_device ? slots : 0;
  gpu.embedding_in_host = options.embedding_in_host;
  absl::StatusOr<std::unique_ptr<engine::GpuDecoderModel>> model =
      engine::GpuDecoderModel::Load(artifact, pool, gpu);
  if (!model.ok()) {
    if (model.status().code() != absl::StatusCode::kResourceExhausted) return model.status();
    const engine::PoolUsage usage = pool->Usage();
    return absl::ResourceExhaustedError(absl::StrCat(
        model.status().message(), " (VRAM pool: ", usage.capacity, " bytes, ", usage.free,
        " free, largest free extent ", usage.largest_free_extent, "; ", slots, " KV slots of ",
        options.context_length, " tokens were asked: lower max_batch_size or context_length, unload a "
        "model or raise --vram_budget)"));
  }
  *regions = GpuRegionBytes{.weights = (*model)->weights_bytes(),
                            .kv_cache = (*model)->kv_bytes(),
                            .workspace = (*model)->workspace_bytes()};
  return std::make_unique<GpuSequenceEngine>(*std::move(model), slots, sample_on_device);
}

namespace internal {

bool GpuBuilt() { return true; }

bool GpuVisible() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace internal
}  // namespace bitloom::inferd
