// WeightSource: where the CPU engine gets its weights, as fp32 tensors by internal name.
//
// The engine never sees how weights were stored (safetensors, GGUF blocks, a Bitloom artifact): a source
// hands out each tensor decoded to fp32, row-major, in Hugging Face orientation, under the names of
// bitloom/formats/tensor_names.h. InMemoryWeightSource holds tensors built in code (the synthetic models
// of the tests); CheckpointWeightSource adapts a formats::Checkpoint. Implementations must be safe for
// concurrent const calls.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/formats/checkpoint.h"

namespace bitloom::engine {

struct WeightTensor {
  std::vector<uint64_t> shape;  // outermost first
  std::vector<float> data;      // row-major, product(shape) values
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool Contains(const std::string& name) const = 0;
  // NOT_FOUND naming the tensor when it is absent.
  virtual absl::StatusOr<WeightTensor> Read(const std::string& name) const = 0;
};

class InMemoryWeightSource : public WeightSource {
 public:
  // INVALID_ARGUMENT when data.size() != product(shape); replaces an existing tensor of that name.
  absl::Status Add(const std::string& name, std::vector<uint64_t> shape, std::vector<float> data);
  // Mutable access for tests that perturb a weight; null when absent.
  WeightTensor* Find(const std::string& name);
  void Remove(const std::string& name) { tensors_.erase(name); }

  bool Contains(const std::string& name) const override { return tensors_.count(name) != 0; }
  absl::StatusOr<WeightTensor> Read(const std::string& name) const override;

 private:
  std::map<std::string, WeightTensor> tensors_;
};

// Reads through a Checkpoint, which must outlive this object.
class CheckpointWeightSource : public WeightSource {
 public:
  explicit CheckpointWeightSource(const formats::Checkpoint& checkpoint);
  bool Contains(const std::string& name) const override;
  absl::StatusOr<WeightTensor> Read(const std::string& name) const override;

 private:
  const formats::Checkpoint& checkpoint_;
  std::map<std::string, std::vector<uint64_t>> shapes_;
};

}  // namespace bitloom::engine
