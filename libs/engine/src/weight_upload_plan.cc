#include "bitloom/engine/weight_upload_plan.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/pool_allocator.h"

namespace bitloom::engine {

absl::StatusOr<WeightUploadPlan> WeightUploadPlan::Build(const v1::ArtifactManifest& manifest) {
  WeightUploadPlan plan;
  plan.tensors_.reserve(manifest.tensors_size());
  for (const v1::TensorEntry& entry : manifest.tensors()) {
    WeightPlacement p;
    p.name = entry.name();
    p.codec = entry.codec();
    p.bytes = entry.size();
    p.file_offset = entry.offset();
    plan.tensors_.push_back(std::move(p));
  }
  // stable_sort keeps manifest order among equal offsets (only empty blobs can share one).
  std::stable_sort(plan.tensors_.begin(), plan.tensors_.end(),
                   [](const WeightPlacement& a, const WeightPlacement& b) {
                     return a.file_offset < b.file_offset;
                   });
  uint64_t end = 0;
  for (size_t i = 0; i < plan.tensors_.size(); ++i) {
    WeightPlacement& p = plan.tensors_[i];
    if (!plan.index_.emplace(p.name, static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight plan: tensor '", p.name, "' appears twice"));
    }
    const uint64_t offset = (end + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
    if (end > UINT64_MAX - kPoolAlignment || p.bytes > UINT64_MAX - kPoolAlignment - offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight plan: region size overflows at tensor '", p.name, "'"));
    }
    p.offset = offset;
    end = offset + p.bytes;
    plan.blob_bytes_ += p.bytes;
  }
  plan.region_bytes_ = (end + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
  return plan;
}

const WeightPlacement* WeightUploadPlan::Find(absl::string_view name) const {
  auto found = index_.find(name);
  return found == index_.end() ? nullptr : &tensors_[found->second];
}

absl::StatusOr<std::vector<absl::Span<const uint8_t>>> PlannedBlobs(
    const modelstore::ArtifactReader& reader, const WeightUploadPlan& plan) {
  std::vector<absl::Span<const uint8_t>> blobs;
  blobs.reserve(plan.tensors().size());
  for (const WeightPlacement& p : plan.tensors()) {
    absl::StatusOr<absl::Span<const uint8_t>> bytes = reader.TensorBytes(p.name);
    if (!bytes.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight plan: tensor '", p.name, "' is not in ", reader.path()));
    }
    if (bytes->size() != p.bytes) {
      return absl::FailedPreconditionError(absl::StrCat("weight plan: tensor '", p.name, "' has ",
                                                        bytes->size(), " bytes in ", reader.path(),
                                                        ", the plan ", p.bytes));
    }
    blobs.push_back(*bytes);
  }
  return blobs;
}

absl::Status CopyWeightsToHost(const modelstore::ArtifactReader& reader,
                               const WeightUploadPlan& plan, absl::Span<uint8_t> region) {
  if (region.size() < plan.region_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("weight upload: region of ", region.size(),
                                                   " bytes for ", plan.region_bytes(),
                                                   " bytes of weights"));
  }
  BITLOOM_ASSIGN_OR_RETURN(const std::vector<absl::Span<const uint8_t>> blobs,
                           PlannedBlobs(reader, plan));
  for (size_t i = 0; i < blobs.size(); ++i) {
    if (!blobs[i].empty())
      std::memcpy(region.data() + plan.tensors()[i].offset, blobs[i].data(), blobs[i].size());
  }
  return absl::OkStatus();
}

}  // namespace bitloom::engine
