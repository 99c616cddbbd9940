// What every reader shares once it has a ModelConfig: the list of supported architectures, config
// validation, the tensors (internal names, Hugging Face shapes) each architecture needs, and a base
// class holding the parsed description. Private to libs/formats.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::formats {

// OK when `architecture` is supported; otherwise INVALID_ARGUMENT
// "unsupported architecture 'phi3' (supported: llama, mistral, qwen2, qwen3, gemma3)" (with `what`
// saying where it was found).
absl::Status CheckArchitecture(absl::string_view architecture, absl::string_view what);

// Sanity of the dimensions: non-zero sizes, heads divisible by kv heads, bounded values. `where`
// names the source in the message.
absl::Status ValidateConfig(const v1::ModelConfig& config, absl::string_view where);

struct ExpectedTensor {
  std::string name;
  std::vector<uint64_t> shape;
};

// Every tensor a model of `config` must provide, with its shape (tensor_names.h).
std::vector<ExpectedTensor> ExpectedTensors(const v1::ModelConfig& config);

// Holds the parsed description; subclasses fill the members in their factory and implement ReadF32.
class CheckpointBase : public Checkpoint {
 public:
  const v1::ModelConfig& config() const override { return config_; }
  const v1::TokenizerSpec& tokenizer() const override { return tokenizer_; }
  const std::string& chat_template() const override { return chat_template_; }
  const v1::SourceModel& source() const override { return source_; }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* FindTensor(const std::string& name) const override;

 protected:
  // Indexes tensors_ and checks that the expected set is present with the expected shapes: NOT_FOUND
  // naming the first missing tensor, INVALID_ARGUMENT naming a shape mismatch. Tensors outside the
  // expected set are dropped from tensors_ by the caller before this is called.
  absl::Status FinishAndValidate(absl::string_view where);

  v1::ModelConfig config_;
  v1::TokenizerSpec tokenizer_;
  std::string chat_template_;
  v1::SourceModel source_;
  std::vector<CheckpointTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

std::string ShapeString(const std::vector<uint64_t>& shape);

}  // namespace bitloom::formats
