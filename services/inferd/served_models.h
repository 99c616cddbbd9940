// ServedModels: the models inferd has loaded, and the pool they are carved from.
//
// The pool has a fixed capacity decided at start (--vram_budget; host memory on the CPU engine).
// Loading a model decodes its weights into the engine (fp32 copies on the CPU: those bytes are the
// pool's "weights" region), builds its tokenizer and chat template, and reserves its KV cache: the
// model's ModelScheduler allocates `slots` caches of context_length tokens up front, where slots is
// max_batch_size, or fewer when kv_cache.pool_fraction of the free pool holds fewer full-length
// sequences (ModelInfo.max_batch_size reports the number actually reserved). A load that does not fit
// even one full-length sequence is RESOURCE_EXHAUSTED with the sizes, and nothing stays reserved. The
// artifact is only mapped while loading: serving uses the engine's copies, so deleting the artifact
// from the store does not disturb a loaded model.
//
// On the GPU (a device pool given at construction, --device=gpu) the pool is an engine::VramPool:
// a load uploads the artifact as a GpuDecoderModel with regions of its own (weights, kv_cache,
// workspace) sized for max_batch_size full-length sequences, RESOURCE_EXHAUSTED naming the pool's
// numbers when they do not fit; the usage is the VramPool's. The regions are freed when the unloaded
// model's last user lets go of it (at once unless a request is still handing back its last message).
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/vram_pool.h"
#include "bitloom/formats/chat_template.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.pb.h"
#include "load_options.h"
#include "model_scheduler.h"
#include "sequence_engine.h"
#include "serving_metrics.h"

namespace bitloom::inferd {

struct PoolUsage {
  uint64_t capacity_bytes = 0;
  uint64_t weight_bytes = 0;
  uint64_t kv_cache_bytes = 0;
  uint64_t workspace_bytes = 0;  // the GPU engine's activations; 0 on the CPU
  uint64_t free_bytes() const { return capacity_bytes - weight_bytes - kv_cache_bytes - workspace_bytes; }
};

// One loaded model. Immutable once published, except through its scheduler (which is thread-safe).
struct ServedModel {
  LoadOptions options;
  v1::ModelInfo info;
  // The CPU engine's model (null on the GPU, where `engine` owns the model).
  std::unique_ptr<engine::DecoderModel> model;
  std::unique_ptr<SequenceEngine> engine;
  std::unique_ptr<formats::Tokenizer> tokenizer;
  // Absent when the artifact has none or it does not parse; chat_template_error then says why.
  std::optional<formats::ChatTemplate> chat_template;
  std::string chat_template_error;
  // Ids that end a generation unless ignore_eos: the config's EOS ids and the tokenizer's
  // end-of-turn tokens ("<|im_end|>", "<end_of_turn>", ...).
  std::vector<int32_t> eos_ids;
  // Declared last so it is destroyed (its thread joined) before what it points into.
  std::unique_ptr<ModelScheduler> scheduler;
};

class ServedModels {
 public:
  // `store`, `threads` (may be null: one thread), `metrics` (may be null) and `device_pool` (null:
  // the CPU engine, in a host pool of pool_capacity_bytes) are not owned and must outlive this object.
  // `sample_on_gpu` (inferd's --gpu_sampling): GPU models sample their decode steps on the device.
  ServedModels(modelstore::ModelStore* store, uint64_t pool_capacity_bytes, ThreadPool* threads,
               const ServingMetrics* metrics, engine::VramPool* device_pool = nullptr, bool sample_on_gpu = true);
  ~ServedModels();  // shuts every scheduler down

  absl::StatusOr<v1::ModelInfo> Load(const v1::LoadModelRequest& request);
  // Ends the model's requests with FINISH_REASON_CANCELLED and frees its pool regions.
  absl::Status Unload(const std::string& model_id);
  std::vector<v1::ModelInfo> List() const;
  // NOT_FOUND naming the model when it is not loaded.
  absl::StatusOr<std::shared_ptr<const ServedModel>> Find(const std::string& model_id) const;
  // Every loaded model (for metrics).
  std::vector<std::shared_ptr<const ServedModel>> All() const;
  PoolUsage Usage() const;
  bool on_gpu() const { return device_pool_ != nullptr; }

  // SIGTERM: every scheduler stops admitting and cancels what is left at `deadline`; later loads are
  // UNAVAILABLE.
  void Drain(absl::Time deadline);

 private:
  // Builds the CPU engine model, tokenizer, template and scheduler (slow: decodes every tensor).
  absl::Status Build(const modelstore::ArtifactReader& artifact, ServedModel& model, int slots) const;
  // Load() on the GPU, once the options are resolved.
  absl::StatusOr<v1::ModelInfo> LoadOnGpu(const modelstore::ArtifactReader& artifact, const LoadOptions& options,
                                          absl::Time start);
  // The tokenizer, chat template and stop ids (both engines).
  absl::Status BuildFrontEnd(const modelstore::ArtifactReader& artifact, ServedModel& model) const;
  // The scheduler over model.engine.
  void StartScheduler(ServedModel& model, int slots) const;
  // Fills the info, publishes the model and records the load. mu_ held.
  v1::ModelInfo PublishLocked(const v1::ArtifactManifest& manifest, std::shared_ptr<ServedModel> model, int slots,
                              uint64_t weight_bytes, uint64_t kv_bytes, absl::Time start);

  modelstore::ModelStore* store_;
  ThreadPool* threads_;
  const ServingMetrics* metrics_;
  engine::VramPool* device_pool_;
  const bool sample_on_gpu_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const ServedModel>> models_;  // guarded by mu_
  std::set<std::string> loading_;                                     // guarded by mu_
  std::optional<absl::Time> drain_deadline_;                          // guarded by mu_
  PoolUsage usage_;                                                   // guarded by mu_
};

}  // namespace bitloom::inferd
