#include "output_fisher.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/rms_norm.h"

namespace bitloom::quant::internal {
namespace {

// x [rows, cols] → xᵀ [cols, rows].
std::vector<float> Transposed(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
  }
  return t;
}

// a · aᵀ for a [rows, k]: [rows, rows], symmetric to the bit (each entry is one DotF32 of two
// rows, and the product of two floats does not depend on their order).
absl::StatusOr<std::vector<float>> Gram(const std::vector<float>& a, int64_t rows, int64_t k,
                                        const MatmulFn& matmul) {
  std::vector<float> g(rows * rows);
  if (absl::Status s = matmul({a.data(), a.data(), nullptr, g.data(), rows, rows, k}); !s.ok()) {
    return s;
  }
  return g;
}

}  // namespace

absl::StatusOr<std::vector<float>> OutputFisher::Normalized(absl::Span<const float> hidden,
                                                            ThreadPool* pool) const {
  std::vector<float> u(hidden.size());
  const int64_t rows = static_cast<int64_t>(hidden.size()) / hidden_;
  if (absl::Status s =
          kernels::RmsNormF32({hidden.data(), output_.norm_weight.data(), u.data(), rows, hidden_,
                               output_.norm_eps, output_.norm_weight_offset},
                              pool);
      !s.ok()) {
    return s;
  }
  return u;
}

absl::StatusOr<OutputFisher> OutputFisher::Build(const OutputLayer& output,
                                                 absl::Span<const float> hidden,
                                                 int64_t hidden_size, const MatmulFn& matmul,
                                                 ThreadPool* pool) {
  const int64_t d = hidden_size, vocab = output.vocab;
  if (d <= 0 || static_cast<int64_t>(output.norm_weight.size()) != d || vocab <= 0 ||
      static_cast<int64_t>(output.head.size()) != vocab * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "OutputFisher: norm weight of ", output.norm_weight.size(), " and head of ",
        output.head.size(), " values do not fit hidden_size ", d, " and vocab ", vocab));
  }
  if (hidden.empty() || hidden.size() % d != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("OutputFisher: ", hidden.size(), " reference values are not rows of ", d));
  }
  const int64_t tokens = static_cast<int64_t>(hidden.size()) / d;
  OutputFisher f(output, d);
  auto u = f.Normalized(hidden, pool);
  if (!u.ok()) return u.status();

  // p_t = softmax(W·u_t), in place over the logits; p̄ its mean over tokens.
  std::vector<float> p(tokens * vocab);
  if (absl::Status s = matmul({u->data(), output.head.data(), nullptr, p.data(), tokens, vocab, d});
      !s.ok()) {
    return s;
  }
  std::vector<double> mean(vocab, 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = p.data() + t * vocab;
    const float mx = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
    for (int64_t v = 0; v < vocab; ++v) {
      const double q = std::exp(static_cast<double>(row[v]) - mx) / sum;
      row[v] = static_cast<float>(q);
      mean[v] += q / static_cast<double>(tokens);
    }
  }

  // The rows that hold all but kTailMass of p̄ (ties: lower id first), at most kMaxVocabRows.
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return mean[a] > mean[b]; });
  int64_t kept = 0;
  for (double mass = 0.0; kept < std::min(vocab, kMaxVocabRows) && mass < 1.0 - kTailMass; ++kept) {
    mass += mean[order[kept]];
  }
  f.vocab_rows_ = kept;

  // m_t = Wᵀ p_t over the kept rows: [tokens, d].
  std::vector<float> w_t(d * kept), p_kept(tokens * kept);
  for (int64_t j = 0; j < kept; ++j) {
    const float* w = output.head.data() + order[j] * d;
    for (int64_t i = 0; i < d; ++i) w_t[i * kept + j] = w[i];
    for (int64_t t = 0; t < tokens; ++t) p_kept[t * kept + j] = p[t * vocab + order[j]];
  }
  std::vector<float>().swap(p);
  std::vector<float> m(tokens * d);
  if (absl::Status s = matmul({p_kept.data(), w_t.data(), nullptr, m.data(), tokens, d, kept});
      !s.ok()) {
    return s;
  }
  // F̄ = Wᵀ diag(p̄) W − (1/tokens) Σ_t m_t m_tᵀ.
  auto spread = Gram(Transposed(m, tokens, d), d, tokens, matmul);
  if (!spread.ok()) return spread.status();
  for (int64_t j = 0; j < kept; ++j) {
    const float scale = static_cast<float>(std::sqrt(mean[order[j]]));
    for (int64_t i = 0; i < d; ++i) w_t[i * kept + j] *= scale;
  }
  auto weighted = Gram(w_t, d, kept, matmul);
  if (!weighted.ok()) return weighted.status();
  f.fisher_ = std::move(*weighted);
  const float inv_tokens = 1.0f / static_cast<float>(tokens);
  for (size_t i = 0; i < f.fisher_.size(); ++i) f.fisher_[i] -= (*spread)[i] * inv_tokens;
  return f;
}

absl::StatusOr<std::vector<double>> OutputFisher::MeanDivergence(absl::Span<const float> reference,
                                                                 absl::Span<const float> moved,
                                                                 int64_t batches,
                                                                 const MatmulFn& matmul,
                                                                 ThreadPool* pool) const {
  if (reference.empty() || reference.size() % hidden_ != 0 || batches < 0 ||
      moved.size() != reference.size() * static_cast<size_t>(batches)) {
    return absl::InvalidArgumentError(absl::StrCat("MeanDivergence: ", moved.size(),
                                                   " moved values are not ", batches,
                                                   " runs of the reference's ", reference.size()));
  }
  const int64_t tokens = static_cast<int64_t>(reference.size()) / hidden_;
  const int64_t rows = batches * tokens;
  auto ref = Normalized(reference, pool);
  if (!ref.ok()) return ref.status();
  auto delta = Normalized(moved, pool);
  if (!delta.ok()) return delta.status();
  for (int64_t r = 0; r < rows; ++r) {
    const float* base = ref->data() + (r % tokens) * hidden_;
    float* row = delta->data() + r * hidden_;
    for (int64_t i = 0; i < hidden_; ++i) row[i] -= base[i];
  }
  std::vector<float> pulled(rows * hidden_);  // F̄·δ per row (F̄ symmetric)
  if (absl::Status s =
          matmul({delta->data(), fisher_.data(), nullptr, pulled.data(), rows, hidden_, hidden_});
      !s.ok()) {
    return s;
  }
  std::vector<double> divergence(batches, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double q = 0.0;
    for (int64_t i = 0; i < hidden_; ++i) {
      q += static_cast<double>((*delta)[r * hidden_ + i]) * pulled[r * hidden_ + i];
    }
    divergence[r / tokens] += 0.5 * q / static_cast<double>(tokens);
  }
  return divergence;
}

}  // namespace bitloom::quant::internal
