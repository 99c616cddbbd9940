#include "import_checkpoint.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/modelstore/reference_tensor.h"
#include "bitloom/service/version.h"

namespace bitloom::tools {
namespace {

uint64_t ElementCount(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

}  // namespace

absl::StatusOr<v1::ArtifactSummary> ImportCheckpoint(const std::string& source_path,
                                                     modelstore::ModelStore& store,
                                                     const ImportOptions& options) {
  BITLOOM_RETURN_IF_ERROR(modelstore::ModelStore::ValidateArtifactName(options.artifact_name));
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<formats::Checkpoint> checkpoint,
                           formats::OpenCheckpoint(source_path));
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<modelstore::ArtifactWriter> writer,
                           store.NewWriter(options.artifact_name, options.overwrite));

  const auto& tensors = checkpoint->tensors();
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const formats::CheckpointTensor& tensor = tensors[i];
    values.resize(ElementCount(tensor.shape));
    BITLOOM_RETURN_IF_ERROR(checkpoint->ReadF32Into(tensor.name, absl::MakeSpan(values)));
    v1::TensorEntry entry;
    modelstore::EncodeReferenceTensor(tensor.name, tensor.shape, values, &entry, &bytes);
    BITLOOM_RETURN_IF_ERROR(writer->AddTensor(std::move(entry), bytes));
    if (options.on_progress) options.on_progress(i + 1, tensors.size());
  }

  v1::ArtifactManifest manifest;
  *manifest.mutable_config() = checkpoint->config();
  *manifest.mutable_tokenizer() = checkpoint->tokenizer();
  manifest.set_chat_template(checkpoint->chat_template());
  *manifest.mutable_source() = checkpoint->source();
  BITLOOM_ASSIGN_OR_RETURN(std::string digest, checkpoint->ComputeDigest());
  manifest.mutable_source()->set_digest(digest);
  manifest.set_quantizer_version(absl::StrCat("bitloom ", service::kVersion, " import (fp16)"));
  manifest.set_bits_per_weight(16);
  manifest.set_head_bits_per_weight(16);
  manifest.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
  BITLOOM_RETURN_IF_ERROR(writer->Finish(std::move(manifest)));
  BITLOOM_ASSIGN_OR_RETURN(modelstore::ArtifactDescription description,
                           store.Describe(options.artifact_name, /*verify_checksums=*/false));
  return description.summary;
}

}  // namespace bitloom::tools
