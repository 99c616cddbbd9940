// HadamardRotation: the seeded, orthogonal "incoherence" rotation R of CODEC_HADAMARD_SCALAR.
//
//     R = (1/√(p·L)) · (B ⊗ H_L) · D        n = p · L,  L = 2^k
//
// D is diag(±1) from the seed, H_L the Sylvester–Hadamard matrix (applied by the fast
// Walsh–Hadamard transform, L·log2 L adds), and B a p×p ±1 Hadamard matrix for the odd part of n,
// built by Paley's constructions (order q+1 for a prime q ≡ 3 mod 4, order 2(q+1) for a prime q ≡ 1
// mod 4). Real model widths all have one: 576 = 36·16 (q = 17), 1536 = 12·128 (q = 11), 2560 =
// 20·128 (q = 19), 14336 = 28·512 (q = 13), 960 = 60·16 (q = 59). When no Paley order ≤ 256 divides
// n (n odd, say), B is the identity of the odd part: R is then block-diagonal, still exactly
// orthogonal, just less mixing. Which case applies is in Describe(), and the encoder records it in
// the tensor's params.
//
// The encoder stores W' = W·Rᵀ (each weight row rotated by R); inference computes W'·(R·x) = W·x.
// Rows of a tensor batch are independent, so Apply() on [rows, n] rotates each row.
//
// The signs come from SplitMix64(seed): sign_i = −1 when bit 63 of the i-th output is set. Any
// implementation (CUDA included) reproduces R from (n, seed) by calling Create() on the host and
// uploading signs() and base_matrix(). Immutable after Create(); safe for concurrent use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

class HadamardRotation {
 public:
  // INVALID_ARGUMENT for n < 1.
  static absl::StatusOr<HadamardRotation> Create(int64_t n, uint64_t seed);

  int64_t size() const { return n_; }
  uint64_t seed() const { return seed_; }
  int64_t base_order() const { return p_; }  // p
  int64_t pow2_order() const { return l_; }  // L
  bool base_is_hadamard() const { return base_is_hadamard_; }
  const std::vector<float>& signs() const { return signs_; }        // [n], ±1
  const std::vector<int8_t>& base_matrix() const { return base_; }  // [p, p] row-major, ±1 (or I)
  // For example "rht:paley2(36)x16", "rht:sylvester(4096)", "rht:identity(7)x1": a stable string
  // that names the construction, so a reader can check it builds the same R.
  std::string Describe() const;

  // x[r] ← R·x[r] for r < rows (x is [rows, n], row-major). `pool` may be null.
  void Apply(float* x, int64_t rows, ThreadPool* pool) const;
  void Apply(double* x, int64_t rows, ThreadPool* pool) const;
  // x[r] ← Rᵀ·x[r]: the inverse.
  void ApplyTranspose(float* x, int64_t rows, ThreadPool* pool) const;
  void ApplyTranspose(double* x, int64_t rows, ThreadPool* pool) const;

 private:
  HadamardRotation() = default;
  template <typename T>
  void ApplyRow(T* x, bool transpose, std::vector<T>& scratch) const;
  template <typename T>
  void ApplyRows(T* x, int64_t rows, bool transpose, ThreadPool* pool) const;

  int64_t n_ = 0;
  uint64_t seed_ = 0;
  int64_t p_ = 1;
  int64_t l_ = 1;
  bool base_is_hadamard_ = false;
  std::string base_name_;
  double norm_ = 1.0;  // 1/√(p·L), or 1/√L when B is the identity
  std::vector<float> signs_;
  std::vector<int8_t> base_;
};

// A p×p ±1 Hadamard matrix (H·Hᵀ = p·I) of exactly this order by Paley's construction I or II over
// a prime field, row-major; empty when neither applies (p not of the form q+1 or 2(q+1) for a
// suitable prime q). `name` (may be null) gets e.g. "paley1(12)". Exposed for the tests.
std::vector<int8_t> PaleyHadamard(int64_t order, std::string* name);

}  // namespace bitloom::kernels
