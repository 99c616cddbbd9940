// Element-wise kernels of the GPU Hessian path: folding the fp32 partial sum into the fp64 total,
// writing the mean, and the matrices around the factorisation (the reversed damped Hessian, an
// identity, and U from the inverse Cholesky factor). All matrices are dense [n, n] fp64/fp32 on
// the device; every launcher is asynchronous on `stream`, allocates nothing and returns INTERNAL
// for a launch error. Private to libs/quant/cuda; plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace bitloom::quant::cuda::internal {

// sum[i·n + j] += partial[i·n + j] for j ≥ i (the upper triangle, row-major; the lower triangle
// of `sum` is not touched and `partial`'s is not read).
absl::Status LaunchFoldPartial(const float* partial, double* sum, int64_t n, cudaStream_t stream);

// out [n, n] = the full symmetric mean: out[i][j] = out[j][i] = sum[min][max] · inv_rows.
absl::Status LaunchWriteMean(const double* sum, double inv_rows, double* out, int64_t n,
                             cudaStream_t stream);

// a [n, n] = P·(H + λ·m·I)·P with P the reversal, dead diagonal entries replaced: a[i][j] =
// h[n−1−i][n−1−j] off the diagonal (0 when diagonal_only), a[i][i] = diag[n−1−i] + shift.
// Symmetric, so it reads the same row- or column-major.
absl::Status LaunchBuildReversedDamped(const double* h, const double* diag, double shift,
                                       bool diagonal_only, double* a, int64_t n,
                                       cudaStream_t stream);

// *flag = 1 when any of a[0, count) is not finite (the caller zeroes it first; it is only ever set).
absl::Status LaunchFlagNonFinite(const double* a, int64_t count, int* flag, cudaStream_t stream);

// a [n, n] = I.
absl::Status LaunchSetIdentity(double* a, int64_t n, cudaStream_t stream);

// U (row-major, upper) from X = R⁻¹ (column-major upper, R the upper Cholesky factor of P·Hd·P):
// U[k] = X[n² − 1 − k] for the upper triangle, 0 below. Writes u32 always, u64 when non-null.
// (Why the index reversal is U: see FactorOnDevice in gpu_ldlq.cc.)
absl::Status LaunchReverseToUpper(const double* x, float* u32, double* u64, int64_t n,
                                  cudaStream_t stream);

// out[r] = Σ_j a[r·n + j] · b[r·n + j] for r < rows, in a fixed order (deterministic).
absl::Status LaunchRowDot(const double* a, const double* b, int64_t rows, int64_t n, double* out,
                          cudaStream_t stream);

// out [rows, cols] fp64 = w − dequantized(codes, scales) in fp32 (exactly the CPU's Δ), or w
// itself when codes is null. w [rows, cols] fp32; codes [rows, cols]; scales [rows, groups].
absl::Status LaunchDeltaToF64(const float* w, const uint8_t* codes, const uint16_t* scales,
                              int bits, int group_size, int64_t groups_per_row, int64_t rows,
                              int64_t cols, double* out, cudaStream_t stream);

}  // namespace bitloom::quant::cuda::internal
