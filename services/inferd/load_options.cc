#include "load_options.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/service/field_names.h"

namespace bitloom::inferd {

absl::StatusOr<LoadOptions> ParseLoadRequest(const v1::LoadModelRequest& request) {
  LoadOptions options;
  BITLOOM_RETURN_IF_ERROR(service::ForField(
      "artifact_name", modelstore::ModelStore::ValidateArtifactName(request.artifact_name())));
  options.artifact_name = request.artifact_name();
  options.model_id = request.model_id().empty() ? request.artifact_name() : request.model_id();
  BITLOOM_RETURN_IF_ERROR(service::ForField(
      "model_id", modelstore::ModelStore::ValidateArtifactName(options.model_id)));

  options.context_length = request.context_length();
  if (options.context_length != 0 && options.context_length < kMinContextLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context_length: ", options.context_length, " is below the minimum ", kMinContextLength));
  }
  options.max_batch_size =
      request.max_batch_size() == 0 ? kDefaultMaxBatchSize : request.max_batch_size();
  if (options.max_batch_size > kMaxBatchSize) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_size: ", request.max_batch_size(),
                                                   " is outside [1, ", kMaxBatchSize, "]"));
  }
  const v1::KvCacheOptions& kv = request.kv_cache();
  options.kv_dtype = kv.dtype().empty() ? "fp16" : kv.dtype();
  if (options.kv_dtype != "fp16" && options.kv_dtype != "fp8") {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache.dtype: '", kv.dtype(), "' is not one of fp16, fp8"));
  }
  options.kv_page_tokens = kv.page_tokens() == 0 ? kDefaultPageTokens : kv.page_tokens();
  if (options.kv_page_tokens != 16 && options.kv_page_tokens != 32 &&
      options.kv_page_tokens != 64 && options.kv_page_tokens != 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_cache.page_tokens: ", kv.page_tokens(), " is not one of 16, 32, 64, 128"));
  }
  options.kv_pool_fraction = kv.pool_fraction() == 0 ? kDefaultKvPoolFraction : kv.pool_fraction();
  if (!std::isfinite(options.kv_pool_fraction) || options.kv_pool_fraction <= 0 ||
      options.kv_pool_fraction > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache.pool_fraction: ", kv.pool_fraction(), " is outside (0, 1]"));
  }
  options.verify_checksums = request.verify_checksums();
  options.embedding_in_host = request.embedding_in_host_memory();
  return options;
}

absl::Status ResolveForModel(const v1::ModelConfig& config, LoadOptions& options) {
  const uint32_t model_max = config.max_position_embeddings();
  if (options.context_length == 0) {
    options.context_length = model_max;
  } else if (model_max != 0 && options.context_length > model_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length: ", options.context_length,
                     " is longer than the model's max_position_embeddings ", model_max));
  }
  if (options.context_length == 0) {
    return absl::InvalidArgumentError(
        "context_length: the model does not state max_position_embeddings; set it explicitly");
  }
  return absl::OkStatus();
}

uint64_t KvBytesPerToken(uint32_t num_layers, uint32_t num_kv_heads, uint32_t head_dim,
                         uint32_t element_bytes) {
  return 2ull * num_layers * num_kv_heads * head_dim * element_bytes;
}

}  // namespace bitloom::inferd
