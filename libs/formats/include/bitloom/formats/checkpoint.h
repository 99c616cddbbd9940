// Checkpoint: a source model (Hugging Face directory or GGUF file) seen through one interface.
//
// OpenCheckpoint() picks the reader from the path (a directory is Hugging Face, a *.gguf file is GGUF).
// Gemma norm weights are returned as Hugging Face stores them (w, applied as x * (1 + w)) from either
// source, although GGUF files store 1 + w (docs/GGUF.md).
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
#include "absl/types/span.h"
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

  // As ReadF32, into caller-owned memory of exactly the tensor's element count (INVALID_ARGUMENT
  // otherwise), so a loader can decode straight into its own buffers.
  virtual absl::Status ReadF32Into(const std::string& name, absl::Span<float> out) const;

  // nullptr when the checkpoint has no tensor of that internal name.
  virtual const CheckpointTensor* FindTensor(const std::string& name) const;

  // Lower-case hex SHA-256 of the weight files' bytes, concatenated in file-name order (the GGUF file;
  // the *.safetensors files of a Hugging Face directory). It reads every byte, so it is computed only
  // when asked for: source().digest stays empty and the caller copies this value in when it needs it.
  virtual absl::StatusOr<std::string> ComputeDigest() const;
};

// Architectures the readers accept, as ModelConfig.architecture names them.
const std::vector<std::string>& SupportedArchitectures();

// Opens a Hugging Face directory (config.json + *.safetensors) or a GGUF file (decided by content:
// a directory is Hugging Face, a regular file must start with the GGUF magic). Validates the
// configuration and that every tensor the architecture needs is present with the expected shape.
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenCheckpoint(const std::string& path);

}  // namespace bitloom::formats
