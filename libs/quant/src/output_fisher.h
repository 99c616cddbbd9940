// OutputFisher: what a change of the last block's output does to the model's next-token
// distribution, to second order, the currency in which the pipeline prices every tensor at every
// width (docs/QUANTIZATION.md, section 5).
//
// With u = RMSNorm(h) the final-normalised stream and z = W·u the logits, a small change δ of u
// moves the distribution p = softmax(z) by
//
//   KL(p ‖ p') ≈ ½ δᵀ Wᵀ (diag(p) − p·pᵀ) W δ = ½ δᵀ F_t δ,
//
// F_t the Fisher information of the token's softmax pulled back through the head. Build() averages
// F_t over reference tokens (F̄, hidden × hidden), so a probe costs hidden² per token instead of a
// head pass (vocab × hidden): the directions the head reads, weighted by how sharply the model
// predicts, count; the directions it ignores (and the stream's overall scale, which the final norm
// removes) do not. F̄ is formed over the vocabulary rows that hold all but kTailMass of the mean
// probability, most significant first, at most kMaxVocabRows of them.
//
// The dense products go through a MatmulFn (QuantBackend::Matmul: MatmulF32 on the CPU, cuBLAS on
// the GPU, where a Llama-3-8B job's ~6·10¹² multiply-adds of probes belong). Deterministic for a
// deterministic MatmulFn (MatmulF32: the same bits whatever the thread count).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/matmul_f32.h"
#include "bitloom/quant/block_runner.h"

namespace bitloom::quant::internal {

// y = x·wᵀ, kernels::MatmulF32's contract.
using MatmulFn = std::function<absl::Status(const kernels::MatmulF32Params&)>;

class OutputFisher {
 public:
  static constexpr double kTailMass = 1e-4;
  static constexpr int64_t kMaxVocabRows = 32768;

  // F̄ over the reference last-block outputs `hidden` [tokens, hidden]. INVALID_ARGUMENT when the
  // shapes disagree (naming them).
  static absl::StatusOr<OutputFisher> Build(const OutputLayer& output,
                                            absl::Span<const float> hidden, int64_t hidden_size,
                                            const MatmulFn& matmul, ThreadPool* pool);

  // For each of the `batches` runs in `moved` ([batches · tokens, hidden], each like `reference`
  // [tokens, hidden]): the mean over tokens of ½ δᵀ F̄ δ, δ the change of the final-normalised
  // stream, in nats. `pool` serves the norms.
  absl::StatusOr<std::vector<double>> MeanDivergence(absl::Span<const float> reference,
                                                     absl::Span<const float> moved, int64_t batches,
                                                     const MatmulFn& matmul,
                                                     ThreadPool* pool) const;

  const std::vector<float>& fisher() const { return fisher_; }  // [hidden, hidden], symmetric
  int64_t vocab_rows() const { return vocab_rows_; }            // rows of W that formed it

 private:
  OutputFisher(const OutputLayer& output, int64_t hidden_size)
      : output_(output), hidden_(hidden_size) {}
  absl::StatusOr<std::vector<float>> Normalized(absl::Span<const float> hidden,
                                                ThreadPool* pool) const;

  OutputLayer output_;
  int64_t hidden_;
  int64_t vocab_rows_ = 0;
  std::vector<float> fisher_;
};

}  // namespace bitloom::quant::internal
