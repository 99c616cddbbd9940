// LoadModelRequest validation and defaults: context length, batch size and KV cache options checked
// against their documented limits and the model's own, with messages that name field and limit.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/v1/inference.pb.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::inferd {

inline constexpr uint32_t kMinContextLength = 16;
inline constexpr uint32_t kDefaultMaxBatchSize = 16;
inline constexpr uint32_t kMaxBatchSize = 256;
inline constexpr uint32_t kDefaultPageTokens = 16;
inline constexpr double kDefaultKvPoolFraction = 0.9;

// A LoadModelRequest with every default applied and every limit checked.
struct LoadOptions {
  std::string artifact_name;
  std::string model_id;
  uint32_t context_length = 0;
  uint32_t max_batch_size = 0;
  std::string kv_dtype;  // "fp16" or "fp8"
  uint32_t kv_page_tokens = 0;
  double kv_pool_fraction = 0;
  bool verify_checksums = false;
  bool embedding_in_host = false;  // GPU only: engine::GpuModelOptions::embedding_in_host
};

// Field checks that need no model (INVALID_ARGUMENT).
absl::StatusOr<LoadOptions> ParseLoadRequest(const v1::LoadModelRequest& request);

// Checks against the model (context_length <= max_position_embeddings) and fills the model defaults.
absl::Status ResolveForModel(const v1::ModelConfig& config, LoadOptions& options);

// Bytes of KV cache one token of context needs (all layers, K and V) at `element_bytes` per value.
// The CPU engine keeps its cache in fp32 (4) whatever kv_cache.dtype says; the dtype is for the
// GPU's paged cache (fp16: 2, fp8: 1).
uint64_t KvBytesPerToken(uint32_t num_layers, uint32_t num_kv_heads, uint32_t head_dim,
                         uint32_t element_bytes);

}  // namespace bitloom::inferd
