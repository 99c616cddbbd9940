// ServedModels: the models inferd has loaded, and the pool they are carved from.
//
// The pool has a fixed capacity decided at start (--vram_budget). Loading a model reserves its weights
// and its KV cache from the pool; a load that does not fit is RESOURCE_EXHAUSTED with the sizes, and
// nothing is reserved. The artifact stays memory-mapped while the model is loaded, so deleting it from
// the store does not disturb serving. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.pb.h"
#include "load_options.h"

namespace bitloom::inferd {

struct PoolUsage {
  uint64_t capacity_bytes = 0;
  uint64_t weight_bytes = 0;
  uint64_t kv_cache_bytes = 0;
  uint64_t free_bytes() const { return capacity_bytes - weight_bytes - kv_cache_bytes; }
};

struct ServedModel {
  LoadOptions options;
  v1::ModelInfo info;
  std::unique_ptr<modelstore::ArtifactReader> artifact;
};

class ServedModels {
 public:
  // `store` is not owned and must outlive this object.
  ServedModels(modelstore::ModelStore* store, uint64_t pool_capacity_bytes);

  absl::StatusOr<v1::ModelInfo> Load(const v1::LoadModelRequest& request);
  absl::Status Unload(const std::string& model_id);
  std::vector<v1::ModelInfo> List() const;
  // NOT_FOUND naming the model when it is not loaded.
  absl::StatusOr<std::shared_ptr<const ServedModel>> Find(const std::string& model_id) const;
  PoolUsage Usage() const;

 private:
  modelstore::ModelStore* store_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const ServedModel>> models_;  // guarded by mu_
  PoolUsage usage_;                                                   // guarded by mu_
};

}  // namespace bitloom::inferd
