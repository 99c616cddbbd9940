#include "bench_weight_bytes.h"

#include <string>

#include "absl/strings/match.h"
#include "bitloom/formats/tensor_names.h"

namespace bitloom::tools {

DecodeWeightBytes DecodeBytesPerToken(const v1::ArtifactManifest& manifest) {
  DecodeWeightBytes out;
  bool has_head = false;
  for (const v1::TensorEntry& t : manifest.tensors()) has_head |= t.name() == formats::kLmHead;
  const bool tied = manifest.config().tie_word_embeddings() || !has_head;
  for (const v1::TensorEntry& t : manifest.tensors()) {
    const std::string& name = t.name();
    if (name == formats::kEmbedTokens) {
      if (tied) {
        out.head += t.size();
      } else if (t.shape_size() == 2 && t.shape(0) > 0) {
        out.embedding_row += t.size() / t.shape(0);
      }
    } else if (name == formats::kLmHead) {
      out.head += t.size();
    } else if (absl::StartsWith(name, "layers.") && absl::EndsWith(name, "_proj.weight")) {
      out.decoder_linears += t.size();
    } else {
      out.norms_and_other += t.size();
    }
  }
  return out;
}

}  // namespace bitloom::tools
