// BlockRunner's default substitution and chaining, over the pure virtual calls: what a runner that
// keeps nothing of its own (the tests' toy blocks) does.
#include "bitloom/quant/block_runner.h"

#include <utility>

namespace bitloom::quant {

absl::StatusOr<std::vector<float>> BlockRunner::RunBlockSubstituted(
    int layer, const WeightMap& substitutes, absl::Span<const float> hidden, int64_t sequences,
    int64_t seq_len, const CaptureFn& capture) const {
  WeightMap weights = substitutes;
  for (const LinearSite& site : Sites(layer)) {
    for (const std::string& name : site.tensors) {
      if (weights.count(name) != 0) continue;
      int64_t rows = 0, cols = 0;
      auto w = ReadWeight(name, &rows, &cols);
      if (!w.ok()) return w.status();
      weights[name] = std::move(*w);
    }
  }
  return RunBlock(layer, weights, hidden, sequences, seq_len, capture);
}

absl::StatusOr<std::vector<float>> BlockRunner::RunStoredBlocks(int first, int end,
                                                                absl::Span<const float> hidden,
                                                                int64_t sequences,
                                                                int64_t seq_len) const {
  std::vector<float> x(hidden.begin(), hidden.end());
  for (int layer = first; layer < end; ++layer) {
    auto out = RunBlockSubstituted(layer, {}, x, sequences, seq_len, {});
    if (!out.ok()) return out.status();
    x = std::move(*out);
  }
  return x;
}

}  // namespace bitloom::quant
