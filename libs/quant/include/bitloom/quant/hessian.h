// HessianAccumulator and FactorHessian: the second-order statistics LDLQ needs, and their damped,
// never-failing factorisation.
//
// For a linear layer y = W·x the proxy loss of a quantized W is tr((W−Q)·H·(W−Q)ᵀ) with H =
// E[x·xᵀ], the mean outer product of the layer's inputs over the calibration tokens.
// HessianAccumulator forms x·xᵀ per chunk of 256 tokens with the blocked fp32 matmul and adds the
// chunk sums into fp64 (a pure fp32 running sum would lose the small eigenvalues after a few hundred
// thousand tokens; fp32 over one chunk loses ~1e-7 relative), one accumulator per distinct input
// (q/k/v share one, gate/up share one). The matmul's order is fixed whatever the thread count, so
// the result is deterministic for a given sequence of Add() calls.
// Not thread-safe: one writer at a time.
//
// FactorHessian returns the upper Cholesky factor U of (H + λ·mean(diag H)·I)⁻¹ = Uᵀ·U, the only
// form LDLQ uses. A factorisation that fails (H singular or indefinite in floating point: few
// calibration tokens, dead inputs) is retried with λ multiplied by `growth`; after `max_attempts`
// it falls back to the diagonal of H, which is always positive definite. A quantization job
// therefore never dies on a non-positive-definite Hessian; only a non-finite H (NaN activations) is
// an error.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/hadamard.h"

namespace bitloom::quant {

class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t dim);

  int64_t dim() const { return dim_; }
  // Calibration rows (tokens) added so far.
  int64_t rows() const { return rows_; }

  // H += Σ_r x_r·x_rᵀ for x [rows, dim] row-major. INVALID_ARGUMENT when x.size() != rows·dim.
  absl::Status Add(absl::Span<const float> x, int64_t rows, ThreadPool* pool);
  // Adds another accumulator of the same dim (for example one per calibration shard).
  absl::Status Merge(const HessianAccumulator& other);

  // H / rows as a full symmetric [dim, dim] row-major matrix; all zeros when no rows were added.
  std::vector<double> Mean() const;

  // The raw state (upper triangle stored in a full [dim, dim] array, plus the row count), so a
  // checkpoint can save it and Restore() can continue bit-identically.
  const std::vector<double>& sum() const { return sum_; }
  static absl::StatusOr<HessianAccumulator> Restore(int64_t dim, int64_t rows,
                                                    std::vector<double> sum);

 private:
  int64_t dim_;
  int64_t rows_ = 0;
  std::vector<double> sum_;  // [dim, dim]; entries (i, j ≥ i) are maintained
};

// H ← R·H·Rᵀ in place (H [n, n] symmetric): the Hessian of the rotated input R·x, to match the
// rotated weight W·Rᵀ.
absl::Status RotateHessian(const kernels::HadamardRotation& rotation, std::vector<double>* h,
                           ThreadPool* pool);

struct DampingOptions {
  // λ of the first attempt, relative to mean(diag H). GPTQ's customary 1%.
  double relative_damp = 0.01;
  // λ is multiplied by this after each failed attempt.
  double growth = 10.0;
  // Attempts with increasing λ before falling back to diag(H).
  int max_attempts = 5;
};

struct HessianFactor {
  int64_t dim = 0;
  std::vector<double> u;           // [dim, dim] upper triangular: (H + damping)⁻¹ = Uᵀ·U
  double relative_damp = 0.0;      // λ that succeeded
  int attempts = 0;                // 1 when the first λ worked
  bool diagonal_fallback = false;  // every attempt failed; U is from diag(H) alone
  // Without the fallback, the matrix factored is H + diag(added_diagonal): the damping λ·mean(diag H)
  // plus mean(diag H) on inputs that were always zero. LDLQ uses it to get the proxy loss from its
  // own scaled errors (scalar_quantizer.h). Empty with the fallback.
  std::vector<double> added_diagonal;
};

// INVALID_ARGUMENT for a size mismatch or a non-finite entry. Zero diagonal entries (inputs that
// were always 0) are set to mean(diag H) first; their weights' columns then quantize like RTN.
absl::StatusOr<HessianFactor> FactorHessian(absl::Span<const double> h, int64_t dim,
                                            const DampingOptions& options, ThreadPool* pool);

}  // namespace bitloom::quant
