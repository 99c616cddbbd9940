#include "bitloom/engine/weight_source.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::engine {
namespace {

uint64_t NumElements(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

}  // namespace

absl::Status InMemoryWeightSource::Add(const std::string& name, std::vector<uint64_t> shape,
                                       std::vector<float> data) {
  if (NumElements(shape) != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", data.size(), " values do not fill its shape (", NumElements(shape), ")"));
  }
  tensors_[name] = WeightTensor{std::move(shape), std::move(data)};
  return absl::OkStatus();
}

WeightTensor* InMemoryWeightSource::Find(const std::string& name) {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<WeightTensor> InMemoryWeightSource::Read(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat("tensor ", name, " not found"));
  return it->second;
}

CheckpointWeightSource::CheckpointWeightSource(const formats::Checkpoint& checkpoint)
    : checkpoint_(checkpoint) {
  for (const formats::CheckpointTensor& t : checkpoint_.tensors()) shapes_[t.name] = t.shape;
}

bool CheckpointWeightSource::Contains(const std::string& name) const { return shapes_.count(name) != 0; }

absl::StatusOr<WeightTensor> CheckpointWeightSource::Read(const std::string& name) const {
  auto it = shapes_.find(name);
  if (it == shapes_.end()) return absl::NotFoundError(absl::StrCat("tensor ", name, " not found in checkpoint"));
  WeightTensor tensor;
  tensor.shape = it->second;
  BITLOOM_ASSIGN_OR_RETURN(tensor.data, checkpoint_.ReadF32(name));
  if (tensor.data.size() != NumElements(tensor.shape)) {
    return absl::DataLossError(absl::StrCat(name, ": checkpoint decoded ", tensor.data.size(),
                                            " values for shape of ", NumElements(tensor.shape)));
  }
  return tensor;
}

}  // namespace bitloom::engine
