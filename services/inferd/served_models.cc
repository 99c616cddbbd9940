#include "served_models.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/artifact_weight_source.h"
#include "bitloom/modelstore/codec_layout.h"
#include "cpu_sequence_engine.h"
#include "serving_device.h"

namespace bitloom::inferd {
namespace {

// The CPU engine holds every weight and every cached key and value as fp32.
constexpr uint32_t kCpuElementBytes = 4;
// Requests that may wait per KV slot before new ones are turned away: enough to absorb a burst of
// clients without letting a queue grow that would take minutes to drain.
constexpr int kQueuedRequestsPerSlot = 8;
constexpr int kMinQueueCapacity = 32;

// Bytes of the engine's fp32 copies of every tensor.
absl::StatusOr<uint64_t> WeightBytes(const v1::ArtifactManifest& manifest) {
  uint64_t total = 0;
  for (const v1::TensorEntry& tensor : manifest.tensors()) {
    BITLOOM_ASSIGN_OR_RETURN(const uint64_t count, modelstore::ElementCount(
                                                       std::vector<uint64_t>(tensor.shape().begin(),
                                                                             tensor.shape().end())));
    total += count * kCpuElementBytes;
  }
  return total;
}

// An artifact whose contents the engine cannot serve is the artifact's fault, not the request's:
// FAILED_PRECONDITION rather than the NOT_FOUND or INVALID_ARGUMENT the engine reports, which would
// read as "no such artifact" or "bad request". Other codes (DATA_LOSS, UNIMPLEMENTED codec) stand.
absl::Status NotServable(const std::string& artifact, const absl::Status& status) {
  absl::StatusCode code = status.code();
  if (code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument) {
    code = absl::StatusCode::kFailedPrecondition;
  }
  return absl::Status(code, absl::StrCat("artifact '", artifact, "' cannot be served: ", status.message()));
}

}  // namespace

ServedModels::ServedModels(modelstore::ModelStore* store, uint64_t pool_capacity_bytes, ThreadPool* threads,
                           const ServingMetrics* metrics, engine::VramPool* device_pool, bool sample_on_gpu)
    : store_(store), threads_(threads), metrics_(metrics), device_pool_(device_pool), sample_on_gpu_(sample_on_gpu) {
  usage_.capacity_bytes = device_pool != nullptr ? device_pool->capacity() : pool_capacity_bytes;
}

ServedModels::~ServedModels() {
  std::map<std::string, std::shared_ptr<const ServedModel>> models;
  {
    std::lock_guard<std::mutex> lock(mu_);
    models.swap(models_);
  }
  for (auto& [id, model] : models) model->scheduler->Shutdown();
}

absl::StatusOr<v1::ModelInfo> ServedModels::Load(const v1::LoadModelRequest& request) {
  const absl::Time start = absl::Now();
  BITLOOM_ASSIGN_OR_RETURN(LoadOptions options, ParseLoadRequest(request));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (drain_deadline_.has_value()) return absl::UnavailableError("the server is shutting down");
    if (models_.contains(options.model_id) || loading_.contains(options.model_id)) {
      return absl::AlreadyExistsError(absl::StrCat("model_id: '", options.model_id, "' is already loaded"));
    }
  }
  // Opening verifies the header, manifest and every tensor entry (and checksums on request).
  BITLOOM_ASSIGN_OR_RETURN(
      std::unique_ptr<modelstore::ArtifactReader> artifact,
      store_->OpenReader(options.artifact_name,
                         modelstore::ReaderOptions{.verify_checksums = options.verify_checksums}));
  const v1::ArtifactManifest& manifest = artifact->manifest();
  BITLOOM_RETURN_IF_ERROR(ResolveForModel(manifest.config(), options));
  absl::StatusOr<engine::ResolvedConfig> resolved = engine::ResolveConfig(manifest.config());
  if (!resolved.ok()) return NotServable(options.artifact_name, resolved.status());
  if (device_pool_ != nullptr) return LoadOnGpu(*artifact, options, start);
  absl::StatusOr<uint64_t> weight_bytes = WeightBytes(manifest);
  if (!weight_bytes.ok()) return NotServable(options.artifact_name, weight_bytes.status());
  const uint64_t kv_per_token = KvBytesPerToken(resolved->num_layers, resolved->num_kv_heads,
                                                resolved->head_dim, kCpuElementBytes);
  const uint64_t kv_per_sequence = kv_per_token * options.context_length;

  // Reserve first, build second: building takes seconds, and two concurrent loads must not both
  // count the same free bytes. loading_ keeps the id taken meanwhile.
  int slots = 0;
  uint64_t kv_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_.contains(options.model_id) || loading_.contains(options.model_id)) {
      return absl::AlreadyExistsError(absl::StrCat("model_id: '", options.model_id, "' is already loaded"));
    }
    const uint64_t free_bytes = usage_.free_bytes();
    if (*weight_bytes > free_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "artifact_name: '", options.artifact_name, "' needs ", *weight_bytes,
          " bytes for its weights but the pool has ", free_bytes, " of ", usage_.capacity_bytes,
          " bytes free (raise --vram_budget or unload a model)"));
    }
    // The KV cache takes its share of what is left, but never more than max_batch_size sequences.
    const uint64_t kv_share = static_cast<uint64_t>(static_cast<double>(free_bytes - *weight_bytes) *
                                                    options.kv_pool_fraction);
    const uint64_t fitting = kv_share / kv_per_sequence;
    if (fitting == 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "context_length: one sequence of ", options.context_length, " tokens needs ", kv_per_sequence,
          " bytes of KV cache but only ", kv_share, " bytes of the pool are left for it after ", *weight_bytes,
          " bytes of weights (lower context_length or raise --vram_budget)"));
    }
    slots = static_cast<int>(std::min<uint64_t>(options.max_batch_size, fitting));
    kv_bytes = kv_per_sequence * static_cast<uint64_t>(slots);
    usage_.weight_bytes += *weight_bytes;
    usage_.kv_cache_bytes += kv_bytes;
    loading_.insert(options.model_id);
  }

  auto model = std::make_shared<ServedModel>();
  model->options = options;
  absl::Status built = Build(*artifact, *model, slots);
  std::lock_guard<std::mutex> lock(mu_);
  loading_.erase(options.model_id);
  if (!built.ok()) {
    usage_.weight_bytes -= *weight_bytes;
    usage_.kv_cache_bytes -= kv_bytes;
    return NotServable(options.artifact_name, built);
  }
  return PublishLocked(manifest, std::move(model), slots, *weight_bytes, kv_bytes, start);
}

v1::ModelInfo ServedModels::PublishLocked(const v1::ArtifactManifest& manifest, std::shared_ptr<ServedModel> model,
                                          int slots, uint64_t weight_bytes, uint64_t kv_bytes, absl::Time start) {
  const LoadOptions& options = model->options;
  // A load that was building when the drain began drains too.
  if (drain_deadline_.has_value()) model->scheduler->Drain(*drain_deadline_);
  v1::ModelInfo& info = model->info;
  info.set_model_id(options.model_id);
  info.set_artifact_name(options.artifact_name);
  info.set_architecture(manifest.config().architecture());
  info.set_context_length(options.context_length);
  info.set_max_batch_size(static_cast<uint32_t>(slots));
  info.set_weight_bytes(weight_bytes);
  info.set_kv_cache_bytes(kv_bytes);
  info.set_bits_per_weight(manifest.bits_per_weight());
  info.set_vocab_size(manifest.config().vocab_size());
  info.set_has_chat_template(model->chat_template.has_value());
  models_[options.model_id] = model;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (metrics_ != nullptr) metrics_->model_load_seconds().Observe(seconds);
  BITLOOM_LOG(INFO) << "loaded " << options.artifact_name << " as " << options.model_id << " on "
                    << (device_pool_ != nullptr ? "the GPU" : "the CPU") << " in " << seconds << " s ("
                    << weight_bytes << " weight bytes, " << slots << " KV slots of " << options.context_length
                    << " tokens, " << kv_bytes << " KV bytes)";
  return info;
}

absl::StatusOr<v1::ModelInfo> ServedModels::LoadOnGpu(const modelstore::ArtifactReader& artifact,
                                                      const LoadOptions& options, absl::Time start) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_.contains(options.model_id) || loading_.contains(options.model_id)) {
      return absl::AlreadyExistsError(absl::StrCat("model_id: '", options.model_id, "' is already loaded"));
    }
    loading_.insert(options.model_id);
  }
  // Every KV slot is a full-length sequence, as on the CPU; the pool decides whether they fit.
  const int slots = static_cast<int>(options.max_batch_size);
  auto model = std::make_shared<ServedModel>();
  model->options = options;
  GpuRegionBytes regions;
  absl::Status built = BuildFrontEnd(artifact, *model);
  if (built.ok()) {
    absl::StatusOr<std::unique_ptr<SequenceEngine>> engine =
        LoadGpuEngine(artifact, device_pool_, options, slots, sample_on_gpu_, &regions);
    if (engine.ok()) {
      model->engine = *std::move(engine);
      StartScheduler(*model, slots);
    } else {
      built = engine.status();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  loading_.erase(options.model_id);
  if (!built.ok()) {
    if (built.code() == absl::StatusCode::kResourceExhausted) return built;
    return NotServable(options.artifact_name, built);
  }
  BITLOOM_LOG(INFO) << options.model_id << ": " << regions.workspace << " workspace bytes on the GPU";
  return PublishLocked(artifact.manifest(), std::move(model), slots, regions.weights, regions.kv_cache, start);
}

absl::Status ServedModels::Build(const modelstore::ArtifactReader& artifact, ServedModel& model,
                                 int slots) const {
  BITLOOM_RETURN_IF_ERROR(BuildFrontEnd(artifact, model));
  engine::ArtifactWeightSource weights(artifact);
  BITLOOM_ASSIGN_OR_RETURN(model.model,
                           engine::DecoderModel::Load(artifact.manifest().config(), weights, threads_));
  model.engine = std::make_unique<CpuSequenceEngine>(model.model.get(), slots,
                                                     static_cast<int>(model.options.context_length),
                                                     static_cast<int>(model.options.kv_page_tokens));
  StartScheduler(model, slots);
  return absl::OkStatus();
}

absl::Status ServedModels::BuildFrontEnd(const modelstore::ArtifactReader& artifact, ServedModel& model) const {
  const v1::ArtifactManifest& manifest = artifact.manifest();
  if (manifest.tokenizer().source_case() == v1::TokenizerSpec::SOURCE_NOT_SET) {
    return absl::FailedPreconditionError("the manifest has no tokenizer");
  }
  BITLOOM_ASSIGN_OR_RETURN(model.tokenizer, formats::Tokenizer::FromSpec(manifest.tokenizer()));

  if (manifest.chat_template().empty()) {
    model.chat_template_error = "the artifact has no chat template";
  } else {
    // A template this interpreter cannot parse disables Chat only; Generate still serves the model.
    absl::StatusOr<formats::ChatTemplate> parsed = formats::ChatTemplate::Parse(manifest.chat_template());
    if (parsed.ok()) {
      model.chat_template = *std::move(parsed);
    } else {
      model.chat_template_error = absl::StrCat("the artifact's chat template does not parse: ",
                                               parsed.status().message());
      BITLOOM_LOG(WARNING) << model.options.model_id << ": " << model.chat_template_error;
    }
  }

  for (uint32_t id : manifest.config().eos_token_ids()) model.eos_ids.push_back(static_cast<int32_t>(id));
  for (int32_t id = 0; id < model.tokenizer->vocab_size(); ++id) {
    if (model.tokenizer->IsEndOfGeneration(id) &&
        std::find(model.eos_ids.begin(), model.eos_ids.end(), id) == model.eos_ids.end()) {
      model.eos_ids.push_back(id);
    }
  }
  return absl::OkStatus();
}

void ServedModels::StartScheduler(ServedModel& model, int slots) const {
  SchedulerOptions scheduler;
  scheduler.slots = slots;
  scheduler.context_length = static_cast<int>(model.options.context_length);
  scheduler.queue_capacity = std::max(kMinQueueCapacity, kQueuedRequestsPerSlot * slots);
  scheduler.page_tokens = static_cast<int>(model.options.kv_page_tokens);
  scheduler.prefill_chunk_tokens = std::max(1, model.engine->prompt_chunk_tokens());
  scheduler.prefill_tokens_per_step = 2 * scheduler.prefill_chunk_tokens;
  model.scheduler = std::make_unique<ModelScheduler>(
      model.engine.get(), model.tokenizer.get(), scheduler,
      metrics_ != nullptr ? metrics_->ForModel(model.options.model_id) : ModelMetrics{});
}

absl::Status ServedModels::Unload(const std::string& model_id) {
  std::shared_ptr<const ServedModel> model;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(model_id);
    if (it == models_.end()) {
      return absl::NotFoundError(absl::StrCat("model_id: '", model_id, "' is not loaded"));
    }
    model = it->second;
    if (device_pool_ == nullptr) {
      usage_.weight_bytes -= model->info.weight_bytes();
      usage_.kv_cache_bytes -= model->info.kv_cache_bytes();
    }
    models_.erase(it);
  }
  // Outside the lock: this waits for the scheduler's current step.
  model->scheduler->Shutdown();
  BITLOOM_LOG(INFO) << "unloaded " << model_id;
  return absl::OkStatus();
}

std::vector<v1::ModelInfo> ServedModels::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::ModelInfo> out;
  for (const auto& [id, model] : models_) out.push_back(model->info);
  return out;
}

std::vector<std::shared_ptr<const ServedModel>> ServedModels::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const ServedModel>> out;
  for (const auto& [id, model] : models_) out.push_back(model);
  return out;
}

absl::StatusOr<std::shared_ptr<const ServedModel>> ServedModels::Find(const std::string& model_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model_id);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model_id: '", model_id, "' is not loaded"));
  }
  return it->second;
}

PoolUsage ServedModels::Usage() const {
  if (device_pool_ != nullptr) {
    const engine::PoolUsage pool = device_pool_->Usage();
    PoolUsage usage;
    usage.capacity_bytes = pool.capacity;
    usage.weight_bytes = pool.used_by_kind[static_cast<int>(engine::RegionKind::kWeights)];
    usage.kv_cache_bytes = pool.used_by_kind[static_cast<int>(engine::RegionKind::kKvCache)];
    usage.workspace_bytes = pool.used_by_kind[static_cast<int>(engine::RegionKind::kWorkspace)];
    return usage;
  }
  std::lock_guard<std::mutex> lock(mu_);
  return usage_;
}

void ServedModels::Drain(absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    drain_deadline_ = deadline;
  }
  for (const std::shared_ptr<const ServedModel>& model : All()) model->scheduler->Drain(deadline);
}

}  // namespace bitloom::inferd
