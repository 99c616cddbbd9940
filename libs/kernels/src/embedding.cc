#include "bitloom/kernels/embedding.h"

#include "absl/strings/str_cat.h"

namespace bitloom::kernels {

absl::Status EmbeddingF32(const EmbeddingParams& p) {
  if (p.vocab <= 0 || p.dim <= 0 || p.tokens < 0) {
    return absl::InvalidArgumentError("EmbeddingF32: needs vocab > 0, dim > 0, tokens >= 0");
  }
  if (p.tokens == 0) return absl::OkStatus();
  if (p.table == nullptr || p.ids == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError("EmbeddingF32: table, ids and out must be non-null");
  }
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int32_t id = p.ids[t];
    if (id < 0 || id >= p.vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " at index ", t, " is outside [0, ", p.vocab, ")"));
    }
    const float* row = p.table + static_cast<int64_t>(id) * p.dim;
    float* out = p.out + t * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) out[i] = row[i] * p.scale;
  }
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
