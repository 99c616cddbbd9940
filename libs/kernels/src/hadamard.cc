#include "bitloom/kernels/hadamard.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel.h"

namespace bitloom::kernels {
namespace {

// Largest base order tried: the dense B step costs p multiply-adds per element, so beyond a few
// hundred it would dominate the O(log n) Walsh–Hadamard part.
constexpr int64_t kMaxBaseOrder = 256;

bool IsPrime(int64_t q) {
  if (q < 2) return false;
  for (int64_t d = 2; d * d <= q; ++d) {
    if (q % d == 0) return false;
  }
  return true;
}

// Quadratic character of GF(q), q prime: χ(0) = 0, +1 on nonzero squares, −1 otherwise.
std::vector<int> QuadraticCharacter(int64_t q) {
  std::vector<int> chi(q, -1);
  chi[0] = 0;
  for (int64_t x = 1; x < q; ++x) chi[(x * x) % q] = 1;
  return chi;
}

// The (q+1)×(q+1) conference core S = [[0, 1ᵀ], [±1, Q]] with Q_ab = χ(a − b) (Jacobsthal matrix):
// the first column is −1 for q ≡ 3 (mod 4), where S is antisymmetric, and +1 for q ≡ 1, where S is
// symmetric. In both cases S·Sᵀ = q·I.
std::vector<int> ConferenceMatrix(int64_t q) {
  const std::vector<int> chi = QuadraticCharacter(q);
  const int64_t m = q + 1;
  const int first_col = (q % 4 == 3) ? -1 : 1;
  std::vector<int> s(m * m, 0);
  for (int64_t j = 1; j < m; ++j) {
    s[j] = 1;
    s[j * m] = first_col;
  }
  for (int64_t a = 0; a < q; ++a) {
    for (int64_t b = 0; b < q; ++b) s[(a + 1) * m + (b + 1)] = chi[((a - b) % q + q) % q];
  }
  return s;
}

// In-place unnormalised fast Walsh–Hadamard transform of x[0, l), l a power of two (Sylvester
// order, which is symmetric, so it is its own transpose).
template <typename T>
void Fwht(T* x, int64_t l) {
  for (int64_t h = 1; h < l; h *= 2) {
    for (int64_t i = 0; i < l; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const T a = x[j];
        const T b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fully specified generator, so the CUDA side and any
// future reader reproduce the signs from the seed without sharing a library's PRNG.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int8_t> PaleyHadamard(int64_t order, std::string* name) {
  std::vector<int8_t> h;
  if (order < 4 || order % 4 != 0) return h;
  if (IsPrime(order - 1) && (order - 1) % 4 == 3) {
    // Paley I: H = I + S with S antisymmetric, so H·Hᵀ = I + S·Sᵀ = (q+1)·I.
    const std::vector<int> s = ConferenceMatrix(order - 1);
    h.resize(order * order);
    for (int64_t i = 0; i < order; ++i) {
      for (int64_t j = 0; j < order; ++j)
        h[i * order + j] = static_cast<int8_t>(s[i * order + j] + (i == j));
    }
    if (name != nullptr) *name = absl::StrCat("paley1(", order, ")");
    return h;
  }
  const int64_t q = order / 2 - 1;
  if (IsPrime(q) && q % 4 == 1) {
    // Paley II: S symmetric; replace 0 by [[1,−1],[−1,−1]] and ±1 by ±[[1,1],[1,−1]].
    const int64_t m = q + 1;
    const std::vector<int> s = ConferenceMatrix(q);
    h.resize(order * order);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        const int v = s[i * m + j];
        const int blk[4] = {v == 0 ? 1 : v, v == 0 ? -1 : v, v == 0 ? -1 : v, v == 0 ? -1 : -v};
        for (int a = 0; a < 2; ++a) {
          for (int b = 0; b < 2; ++b)
            h[(2 * i + a) * order + (2 * j + b)] = static_cast<int8_t>(blk[2 * a + b]);
        }
      }
    }
    if (name != nullptr) *name = absl::StrCat("paley2(", order, ")");
    return h;
  }
  return h;
}

absl::StatusOr<HadamardRotation> HadamardRotation::Create(int64_t n, uint64_t seed) {
  if (n < 1)
    return absl::InvalidArgumentError(absl::StrCat("HadamardRotation: size ", n, " must be >= 1"));
  HadamardRotation r;
  r.n_ = n;
  r.seed_ = seed;
  int64_t odd = n;
  int64_t pow2 = 1;
  while (odd % 2 == 0) {
    odd /= 2;
    pow2 *= 2;
  }
  r.p_ = 1;
  r.l_ = n;
  r.base_is_hadamard_ = true;
  r.base_name_ = "";
  if (odd > 1) {
    bool found = false;
    for (int64_t j = 1; j <= pow2 && odd * j <= kMaxBaseOrder; j *= 2) {
      std::string name;
      std::vector<int8_t> h = PaleyHadamard(odd * j, &name);
      if (!h.empty()) {
        r.p_ = odd * j;
        r.l_ = pow2 / j;
        r.base_ = std::move(h);
        r.base_name_ = name;
        found = true;
        break;
      }
    }
    if (!found) {
      // Block-diagonal fallback: B = I of the odd part.
      r.p_ = odd;
      r.l_ = pow2;
      r.base_is_hadamard_ = false;
      r.base_.assign(odd * odd, 0);
      for (int64_t i = 0; i < odd; ++i) r.base_[i * odd + i] = 1;
      r.base_name_ = absl::StrCat("identity(", odd, ")");
    }
  }
  r.norm_ = 1.0 / std::sqrt(static_cast<double>(r.base_is_hadamard_ ? r.p_ * r.l_ : r.l_));
  r.signs_.resize(n);
  uint64_t state = seed;
  for (int64_t i = 0; i < n; ++i) r.signs_[i] = (SplitMix64(state) >> 63) ? -1.0f : 1.0f;
  return r;
}

std::string HadamardRotation::Describe() const {
  if (p_ == 1) return absl::StrCat("rht:sylvester(", l_, ")");
  return absl::StrCat("rht:", base_name_, "x", l_);
}

template <typename T>
void HadamardRotation::ApplyRow(T* x, bool transpose, std::vector<T>& scratch) const {
  // R = c·(B ⊗ H_L)·D and Rᵀ = c·D·(Bᵀ ⊗ H_L); (B ⊗ I) and (I ⊗ H_L) commute, so H_L runs first
  // either way. x viewed as [p][L]: H_L acts on each row, B mixes rows (out_i = Σ_i'
  // B[i][i']·x_i').
  if (!transpose) {
    for (int64_t i = 0; i < n_; ++i) x[i] *= static_cast<T>(signs_[i]);
  }
  for (int64_t i = 0; i < p_; ++i) Fwht(x + i * l_, l_);
  if (p_ > 1 && base_is_hadamard_) {
    scratch.assign(n_, T(0));
    for (int64_t i = 0; i < p_; ++i) {
      T* out = scratch.data() + i * l_;
      for (int64_t k = 0; k < p_; ++k) {
        const int8_t b = transpose ? base_[k * p_ + i] : base_[i * p_ + k];
        const T* in = x + k * l_;
        if (b > 0) {
          for (int64_t j = 0; j < l_; ++j) out[j] += in[j];
        } else {
          for (int64_t j = 0; j < l_; ++j) out[j] -= in[j];
        }
      }
    }
    for (int64_t i = 0; i < n_; ++i) x[i] = scratch[i];
  }
  const T c = static_cast<T>(norm_);
  if (transpose) {
    for (int64_t i = 0; i < n_; ++i) x[i] *= static_cast<T>(signs_[i]) * c;
  } else {
    for (int64_t i = 0; i < n_; ++i) x[i] *= c;
  }
}

template <typename T>
void HadamardRotation::ApplyRows(T* x, int64_t rows, bool transpose, ThreadPool* pool) const {
  const int64_t cost = n_ * (p_ + 8);
  internal::ParallelRange(pool, rows, cost, [&](int64_t r0, int64_t r1) {
    std::vector<T> scratch;
    for (int64_t r = r0; r < r1; ++r) ApplyRow(x + r * n_, transpose, scratch);
  });
}

void HadamardRotation::Apply(float* x, int64_t rows, ThreadPool* pool) const {
  ApplyRows(x, rows, false, pool);
}
void HadamardRotation::Apply(double* x, int64_t rows, ThreadPool* pool) const {
  ApplyRows(x, rows, false, pool);
}
void HadamardRotation::ApplyTranspose(float* x, int64_t rows, ThreadPool* pool) const {
  ApplyRows(x, rows, true, pool);
}
void HadamardRotation::ApplyTranspose(double* x, int64_t rows, ThreadPool* pool) const {
  ApplyRows(x, rows, true, pool);
}

}  // namespace bitloom::kernels
