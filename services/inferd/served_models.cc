#include "served_models.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::inferd {
namespace {

uint64_t WeightBytes(const v1::ArtifactManifest& manifest) {
  uint64_t total = 0;
  for (const v1::TensorEntry& tensor : manifest.tensors()) total += tensor.size();
  return total;
}

}  // namespace

ServedModels::ServedModels(modelstore::ModelStore* store, uint64_t pool_capacity_bytes)
    : store_(store) {
  usage_.capacity_bytes = pool_capacity_bytes;
}

absl::StatusOr<v1::ModelInfo> ServedModels::Load(const v1::LoadModelRequest& request) {
  BITLOOM_ASSIGN_OR_RETURN(LoadOptions options, ParseLoadRequest(request));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_.contains(options.model_id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("model_id: '", options.model_id, "' is already loaded"));
    }
  }
  // Opening verifies the header, manifest and every tensor entry (and checksums on request).
  BITLOOM_ASSIGN_OR_RETURN(
      std::unique_ptr<modelstore::ArtifactReader> artifact,
      store_->OpenReader(options.artifact_name,
                         modelstore::ReaderOptions{.verify_checksums = options.verify_checksums}));
  const v1::ArtifactManifest& manifest = artifact->manifest();
  BITLOOM_RETURN_IF_ERROR(ResolveForModel(manifest.config(), options));

  auto model = std::make_shared<ServedModel>();
  const uint64_t weight_bytes = WeightBytes(manifest);
  const uint64_t kv_per_token = KvBytesPerToken(manifest.config(), options.kv_dtype);
  // The most KV the model can ever use: every batch slot at full context.
  const uint64_t kv_wanted =
      kv_per_token * static_cast<uint64_t>(options.context_length) * options.max_batch_size;

  std::lock_guard<std::mutex> lock(mu_);
  if (models_.contains(options.model_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("model_id: '", options.model_id, "' is already loaded"));
  }
  const uint64_t free_bytes = usage_.free_bytes();
  if (weight_bytes > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "artifact_name: '", options.artifact_name, "' needs ", weight_bytes,
        " bytes of weights but the pool has ", free_bytes, " of ", usage_.capacity_bytes,
        " bytes free (raise --vram_budget or unload a model)"));
  }
  // The KV cache takes its share of what is left, but never more than the model can use.
  const uint64_t kv_share =
      static_cast<uint64_t>(static_cast<double>(free_bytes - weight_bytes) *
                            options.kv_pool_fraction);
  const uint64_t kv_bytes = std::min(kv_wanted, kv_share);
  const uint64_t min_kv = kv_per_token * options.context_length;  // one full-length sequence
  if (kv_bytes < min_kv) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "context_length: one sequence of ", options.context_length, " tokens needs ", min_kv,
        " bytes of KV cache but only ", kv_bytes,
        " bytes are left in the pool after the weights (lower context_length or raise "
        "--vram_budget)"));
  }

  v1::ModelInfo& info = model->info;
  info.set_model_id(options.model_id);
  info.set_artifact_name(options.artifact_name);
  info.set_architecture(manifest.config().architecture());
  info.set_context_length(options.context_length);
  info.set_max_batch_size(options.max_batch_size);
  info.set_weight_bytes(weight_bytes);
  info.set_kv_cache_bytes(kv_bytes);
  info.set_bits_per_weight(manifest.bits_per_weight());
  info.set_vocab_size(manifest.config().vocab_size());
  info.set_has_chat_template(!manifest.chat_template().empty());
  model->options = options;
  model->artifact = std::move(artifact);

  usage_.weight_bytes += weight_bytes;
  usage_.kv_cache_bytes += kv_bytes;
  models_[options.model_id] = model;
  BITLOOM_LOG(INFO) << "loaded " << options.artifact_name << " as " << options.model_id << " ("
                    << weight_bytes << " weight bytes, " << kv_bytes << " KV bytes)";
  return info;
}

absl::Status ServedModels::Unload(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model_id);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model_id: '", model_id, "' is not loaded"));
  }
  usage_.weight_bytes -= it->second->info.weight_bytes();
  usage_.kv_cache_bytes -= it->second->info.kv_cache_bytes();
  models_.erase(it);
  BITLOOM_LOG(INFO) << "unloaded " << model_id;
  return absl::OkStatus();
}

std::vector<v1::ModelInfo> ServedModels::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::ModelInfo> out;
  for (const auto& [id, model] : models_) out.push_back(model->info);
  return out;
}

absl::StatusOr<std::shared_ptr<const ServedModel>> ServedModels::Find(
    const std::string& model_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model_id);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model_id: '", model_id, "' is not loaded"));
  }
  return it->second;
}

PoolUsage ServedModels::Usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return usage_;
}

}  // namespace bitloom::inferd
