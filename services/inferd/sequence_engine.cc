#include "sequence_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace bitloom::inferd {

// The host path: every row's logits come back and Sampler::Sample picks the token.
absl::StatusOr<SequenceEngine::SampledStep> SequenceEngine::DecodeAndSample(absl::Span<const int> seqs,
                                                                            absl::Span<const int32_t> tokens,
                                                                            absl::Span<const SamplingRow> rows) {
  if (rows.size() != seqs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAndSample: ", seqs.size(), " sequences but ", rows.size(), " sampling rows"));
  }
  absl::StatusOr<std::vector<float>> logits = Decode(seqs, tokens);
  if (!logits.ok()) return logits.status();
  const size_t vocab = static_cast<size_t>(vocab_size());
  SampledStep step;
  step.tokens.resize(rows.size());
  step.logits.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const absl::Span<const float> row = absl::MakeConstSpan(*logits).subspan(i * vocab, vocab);
    step.tokens[i] = rows[i].sampler->Sample(row, rows[i].prompt, rows[i].output);
    if (rows[i].want_logits) step.logits[i].assign(row.begin(), row.end());
  }
  return step;
}

}  // namespace bitloom::inferd
