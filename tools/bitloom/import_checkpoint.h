// ImportCheckpoint: writes a source model (Hugging Face directory or GGUF file) into the model store
// as an unquantized artifact: 2-D weights as fp16, 1-D tensors (norms, biases) as fp32, with the
// model's config, tokenizer and chat template. This is the "16 bits" reference every quantized
// artifact is judged against, and what the demo serves before a quantization job has run.
// The artifact appears in the store atomically, or not at all.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::tools {

struct ImportOptions {
  // Artifact name in the store (ModelStore::ValidateArtifactName rules).
  std::string artifact_name;
  // Replace an existing artifact of that name.
  bool overwrite = false;
  // Called after each tensor with (tensors done, tensors in all); may be empty.
  std::function<void(size_t, size_t)> on_progress;
};

absl::StatusOr<v1::ArtifactSummary> ImportCheckpoint(const std::string& source_path,
                                                     modelstore::ModelStore& store,
                                                     const ImportOptions& options);

}  // namespace bitloom::tools
