#include "synthetic_artifact.h"

#include <stdlib.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/artifact_writer.h"

namespace bitloom::engine {

absl::StatusOr<SyntheticArtifact> SyntheticArtifact::Create(uint64_t seed) {
  SyntheticArtifact artifact;
  std::string templ =
      (std::filesystem::temp_directory_path() / "synthetic_artifact.XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  artifact.dir_ = templ;
  artifact.path_ = templ + "/model.bitloom";
  BITLOOM_ASSIGN_OR_RETURN(auto writer,
                           modelstore::ArtifactWriter::Create(artifact.path_, artifact.dir_));
  struct Spec {
    const char* name;
    v1::Codec codec;
    std::vector<uint64_t> shape;
    float bits;
  };
  // 12, 70, 2, 16384 and 6006 bytes: odd sizes, and tensors larger than a 1000-byte staging chunk.
  const std::vector<Spec> specs = {
      {"model.norm.weight", v1::CODEC_F32, {3}, 32},
      {"layers.0.attn.q_proj.weight", v1::CODEC_F16, {5, 7}, 16},
      {"layers.0.attn_norm.weight", v1::CODEC_BF16, {1}, 16},
      {"embed_tokens.weight", v1::CODEC_F32, {64, 64}, 32},
      {"layers.0.mlp.down_proj.weight", v1::CODEC_F16, {39, 77}, 16},
  };
  std::mt19937_64 rng(seed);
  for (const Spec& spec : specs) {
    uint64_t bytes = spec.codec == v1::CODEC_F32 ? 4 : 2;
    for (uint64_t d : spec.shape) bytes *= d;
    std::vector<uint8_t> blob(bytes);
    for (uint8_t& b : blob) b = static_cast<uint8_t>(rng());
    v1::TensorEntry entry;
    entry.set_name(spec.name);
    entry.set_codec(spec.codec);
    for (uint64_t d : spec.shape) entry.add_shape(d);
    entry.set_bits_per_weight(spec.bits);
    BITLOOM_RETURN_IF_ERROR(writer->AddTensor(entry, blob));
    artifact.names_.push_back(spec.name);
  }
  v1::ArtifactManifest manifest;
  manifest.set_quantizer_version(absl::StrCat("synthetic_artifact seed ", seed));
  BITLOOM_RETURN_IF_ERROR(writer->Finish(manifest));
  return artifact;
}

SyntheticArtifact::SyntheticArtifact(SyntheticArtifact&& other) noexcept
    : dir_(std::move(other.dir_)), path_(std::move(other.path_)), names_(std::move(other.names_)) {
  other.dir_.clear();
}

SyntheticArtifact::~SyntheticArtifact() {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace bitloom::engine
