// Checkpoint: a source model (Hugging Face directory or GGUF file) seen through one interface.
//
// OpenCheckpoint() picks the reader from the path (a directory is Hugging Face, a *.gguf file is GGUF).
// Tensors are exposed under Bitloom's internal names (tensor_names.h) and in Hugging Face orientation:
// a linear weight is [out_features, in_features], row-major, and GGUF's Q/K row permutation for
// rotary embeddings is already undone. Reading is lazy: the files are memory-mapped and a tensor is
// decoded only when asked for, so a 70B checkpoint is never loaded whole. Thread-safe for concurrent
// ReadF32 calls once opened.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::formats {

struct CheckpointTensor {
  std::string name;  // internal name, for example "layers.0.attn.q_proj.weight"
  std::vector<uint64_t> shape;  // outermost first
  // Storage type in the source: "F32", "F16", "BF16", or a GGUF type name such as "Q4_K".
  std::string source_type;
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  virtual const v1::ModelConfig& config() const = 0;
  virtual const v1::TokenizerSpec& tokenizer() const = 0;
  // Jinja chat template, empty when the source has none.
  virtual const std::string& chat_template() const = 0;
  virtual const v1::SourceModel& source() const = 0;
  virtual const std::vector<CheckpointTensor>& tensors() const = 0;

  // The tensor decoded to fp32, row-major in its logical shape. NOT_FOUND for an unknown name.
  virtual absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const = 0;
};

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenCheckpoint(const std::string& path);

}  // namespace bitloom::formats
