#include "bitloom/quant/cuda/gpu_ldlq.h"

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/scalar_codec.h"
#include "device_array.h"
#include "hessian_kernels.h"
#include "ldlq_block.h"
#include "library_status.h"

namespace bitloom::quant::cuda {
namespace {

using internal::DeviceArray;

// Columns per LDLQ block, as scalar_quantizer.cc: a multiple of the group so a group's scale sees
// fully updated weights.
constexpr int64_t kLdlqBlock = 128;
// fp64 elements per chunk of the quadratic forms (two such buffers: 256 MB).
constexpr int64_t kQuadChunkElems = int64_t{1} << 24;
// As scalar_quantizer.cc: above this damping ‖E‖² and the correction Σc·‖Δ_j‖² are close and
// their difference loses digits, so the loss is computed directly (fp64 GEMM).
constexpr double kMaxDampForIdentity = 0.1;

int64_t LdlqBlockFor(int group_size) {
  return std::max<int64_t>(1, kLdlqBlock / group_size) * group_size;
}

// ProxyLoss's ratio. `num` from the scaled errors (Σe² − Σc·Δ²) can round below 0 when Δ ≈ 0;
// with a positive semi-definite H the true value is ≥ 0, so it is clamped there (the exact form is
// passed through as the CPU computes it).
double RelativeLoss(double num, double den, bool clamp) {
  if (clamp) num = std::max(num, 0.0);
  if (den > 0.0) return num / den;
  return num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
}

}  // namespace

struct GpuHessianFactor::Buffers {
  DeviceArray<double> h;          // [dim, dim] undamped, row-major (= column-major: symmetric)
  DeviceArray<float> u;           // [dim, dim] row-major upper, Hd⁻¹ = UᵀU
  DeviceArray<double> damp_diag;  // [dim] (Hd − H)_ii; meaningful unless diagonal_fallback
};

GpuHessianFactor::GpuHessianFactor() = default;
GpuHessianFactor::~GpuHessianFactor() = default;
GpuHessianFactor::GpuHessianFactor(GpuHessianFactor&&) noexcept = default;
GpuHessianFactor& GpuHessianFactor::operator=(GpuHessianFactor&&) noexcept = default;

struct GpuLdlq::Workspace {
  cublasHandle_t cublas = nullptr;
  cusolverDnHandle_t cusolver = nullptr;
  // Factor.
  DeviceArray<double> a, x, potrf_work;
  DeviceArray<int> info;
  // LDLQ over a stack of widths.
  DeviceArray<float> w_in;      // host weights uploaded here
  DeviceArray<float> w_stack;   // [slabs·rows, cols]
  DeviceArray<uint8_t> codes;   // [slabs·rows, cols]
  DeviceArray<uint16_t> scales; // [slabs·rows, groups]
  DeviceArray<float> err;       // [slabs·rows, block]
  DeviceArray<double> err_sq, damp_sq;  // [slabs·rows]
  DeviceArray<uint8_t> blob;
  // Quadratic forms.
  DeviceArray<double> quad_x, quad_y, row_quad;

  ~Workspace() {
    if (cublas != nullptr) cublasDestroy(cublas);
    if (cusolver != nullptr) cusolverDnDestroy(cusolver);
  }
};

GpuLdlq::GpuLdlq(cudaStream_t stream, const GpuLdlqOptions& options,
                 std::unique_ptr<Workspace> ws)
    : stream_(stream), options_(options), ws_(std::move(ws)) {}

GpuLdlq::~GpuLdlq() = default;

absl::StatusOr<std::unique_ptr<GpuLdlq>> GpuLdlq::Create(cudaStream_t stream,
                                                         const GpuLdlqOptions& options) {
  auto ws = std::make_unique<Workspace>();
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&ws->cublas));
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(ws->cublas, stream));
  // Default math: fp32 GEMMs stay fp32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH).
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(ws->cublas, CUBLAS_DEFAULT_MATH));
  BITLOOM_CUSOLVER_RETURN_IF_ERROR(cusolverDnCreate(&ws->cusolver));
  BITLOOM_CUSOLVER_RETURN_IF_ERROR(cusolverDnSetStream(ws->cusolver, stream));
  if (absl::Status s = ws->info.Reserve(1); !s.ok()) return s;
  return std::unique_ptr<GpuLdlq>(new GpuLdlq(stream, options, std::move(ws)));
}

absl::StatusOr<GpuHessianFactor> GpuLdlq::Factor(absl::Span<const double> h, int64_t n,
                                                 const DampingOptions& options,
                                                 HessianFactor* host_copy) {
  if (n <= 0 || static_cast<int64_t>(h.size()) != n * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuLdlq::Factor: ", h.size(), " values for dim ", n));
  }
  if (n > 46340) {  // n² must fit cuSOLVER's and cuBLAS's int sizes
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq::Factor: dim ", n, " too large"));
  }
  for (double v : h) {
    if (!std::isfinite(v))
      return absl::InvalidArgumentError("GpuLdlq::Factor: the Hessian has a non-finite entry");
  }
  std::vector<double> h_diag(n);
  for (int64_t i = 0; i < n; ++i) h_diag[i] = h[i * n + i];
  GpuHessianFactor out;
  out.dim_ = n;
  out.buffers_ = std::make_unique<GpuHessianFactor::Buffers>();
  if (absl::Status s = out.buffers_->h.Reserve(n * n); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.buffers_->h.get(), h.data(),
                                               static_cast<size_t>(n * n) * sizeof(double),
                                               cudaMemcpyHostToDevice, stream_));
  return FactorStaged(std::move(out), std::move(h_diag), options, host_copy);
}

absl::StatusOr<GpuHessianFactor> GpuLdlq::FactorDevice(const double* h, int64_t n,
                                                       const DampingOptions& options,
                                                       HessianFactor* host_copy) {
  if (n <= 0 || h == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq::FactorDevice: dim ", n, " or null h"));
  }
  if (n > 46340) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq::FactorDevice: dim ", n, " too large"));
  }
  GpuHessianFactor out;
  out.dim_ = n;
  out.buffers_ = std::make_unique<GpuHessianFactor::Buffers>();
  if (absl::Status s = out.buffers_->h.Reserve(n * n); !s.ok()) return s;
  double* fh = out.buffers_->h.get();
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(fh, h, static_cast<size_t>(n * n) * sizeof(double),
                                               cudaMemcpyDeviceToDevice, stream_));
  // The checks Factor makes on the host: every entry finite (a flag on the device), and the
  // diagonal (a strided copy of n values) for the repair and the damping.
  DeviceArray<int> flag;
  if (absl::Status s = flag.Reserve(1); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(flag.get(), 0, sizeof(int), stream_));
  if (absl::Status s = internal::LaunchFlagNonFinite(fh, n * n, flag.get(), stream_); !s.ok()) {
    return s;
  }
  std::vector<double> h_diag(n);
  int non_finite = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(h_diag.data(), sizeof(double), fh,
                                                 static_cast<size_t>(n + 1) * sizeof(double),
                                                 sizeof(double), static_cast<size_t>(n),
                                                 cudaMemcpyDeviceToHost, stream_));
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&non_finite, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (non_finite != 0) {
    return absl::InvalidArgumentError("GpuLdlq::FactorDevice: the Hessian has a non-finite entry");
  }
  return FactorStaged(std::move(out), std::move(h_diag), options, host_copy);
}

absl::StatusOr<GpuHessianFactor> GpuLdlq::FactorStaged(GpuHessianFactor out,
                                                       std::vector<double> h_diag,
                                                       const DampingOptions& options,
                                                       HessianFactor* host_copy) {
  const int64_t n = out.dim_;
  // FactorHessian's diagonal repair, on the host (O(n)).
  std::vector<double> diag = h_diag;
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += diag[i];
  mean_diag /= static_cast<double>(n);
  if (!(mean_diag > 0.0)) mean_diag = 1.0;
  for (double& d : diag) {
    if (!(d > 0.0)) d = mean_diag;
  }

  GpuHessianFactor::Buffers& fb = *out.buffers_;
  Workspace& ws = *ws_;
  const size_t n2 = static_cast<size_t>(n * n);
  for (absl::Status s : {fb.u.Reserve(n * n), fb.damp_diag.Reserve(n), ws.a.Reserve(n * n),
                         ws.x.Reserve(n * n)}) {
    if (!s.ok()) return s;
  }
  DeviceArray<double> d_diag;
  if (absl::Status s = d_diag.Reserve(n); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_diag.get(), diag.data(), n * sizeof(double),
                                               cudaMemcpyHostToDevice, stream_));
  const int ni = static_cast<int>(n);
  int lwork = 0;
  BITLOOM_CUSOLVER_RETURN_IF_ERROR(cusolverDnDpotrf_bufferSize(
      ws.cusolver, CUBLAS_FILL_MODE_UPPER, ni, ws.a.get(), ni, &lwork));
  if (absl::Status s = ws.potrf_work.Reserve(std::max(lwork, 1)); !s.ok()) return s;

  // The reversal trick of FactorHessian: with P the reversal and A = P·Hd·P = RᵀR (cuSOLVER's
  // upper factor, column-major), Hd = V·Vᵀ with V = P·Rᵀ·P upper, so U = V⁻¹ = P·R⁻ᵀ·P, i.e.
  // U[i][j] = R⁻¹(n−1−j, n−1−i): the column-major R⁻¹ read backwards as a row-major array
  // (LaunchReverseToUpper). U is unique (positive diagonal), so it is the CPU's U.
  double lambda = options.relative_damp;
  const int attempts = std::max(1, options.max_attempts);
  bool ok = false;
  for (int attempt = 1; attempt <= attempts + 1 && !ok; ++attempt) {
    const bool diagonal = attempt > attempts;
    const double shift = lambda * mean_diag;
    if (absl::Status s = internal::LaunchBuildReversedDamped(fb.h.get(), d_diag.get(), shift,
                                                             diagonal, ws.a.get(), n, stream_);
        !s.ok())
      return s;
    BITLOOM_CUSOLVER_RETURN_IF_ERROR(cusolverDnDpotrf(ws.cusolver, CUBLAS_FILL_MODE_UPPER, ni,
                                                      ws.a.get(), ni, ws.potrf_work.get(), lwork,
                                                      ws.info.get()));
    int info = 0;
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(&info, ws.info.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    if (info < 0) return absl::InternalError(absl::StrCat("cusolverDnDpotrf: info ", info));
    ok = info == 0;
    out.attempts_ = attempt;
    out.relative_damp_ = lambda;
    out.diagonal_fallback_ = diagonal;
    if (!ok) lambda *= options.growth;
  }
  if (!ok) return absl::InternalError("GpuLdlq::Factor: diagonal fallback failed");

  if (absl::Status s = internal::LaunchSetIdentity(ws.x.get(), n, stream_); !s.ok()) return s;
  const double one = 1.0;
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasDtrsm(ws.cublas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER,
                                             CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, ni, ni, &one,
                                             ws.a.get(), ni, ws.x.get(), ni));
  // U in fp64 goes to `a` (the Cholesky factor is no longer needed) only for the host copy.
  if (absl::Status s = internal::LaunchReverseToUpper(
          ws.x.get(), fb.u.get(), host_copy != nullptr ? ws.a.get() : nullptr, n, stream_);
      !s.ok())
    return s;

  // c = diag(Hd − H), FactorHessian's added_diagonal (same expression, same rounding).
  std::vector<double> damp(n, 0.0);
  for (int64_t i = 0; i < n; ++i) damp[i] = diag[i] - h_diag[i] + lambda * mean_diag;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(fb.damp_diag.get(), damp.data(),
                                               n * sizeof(double), cudaMemcpyHostToDevice,
                                               stream_));
  if (host_copy != nullptr) {
    host_copy->dim = n;
    host_copy->u.assign(n2, 0.0);
    host_copy->relative_damp = out.relative_damp_;
    host_copy->attempts = out.attempts_;
    host_copy->diagonal_fallback = out.diagonal_fallback_;
    host_copy->added_diagonal.clear();
    if (!out.diagonal_fallback_) host_copy->added_diagonal = damp;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_copy->u.data(), ws.a.get(),
                                                 n2 * sizeof(double), cudaMemcpyDeviceToHost,
                                                 stream_));
  }
  // The host vectors above (diag, damp) must outlive their asynchronous copies.
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return out;
}

absl::Status GpuLdlq::QuadraticRows(const float* w, const uint8_t* codes, const uint16_t* scales,
                                    int bits, int group_size, int64_t groups_per_row,
                                    int64_t rows, int64_t cols, const GpuHessianFactor& factor,
                                    double* sum) {
  Workspace& ws = *ws_;
  const int64_t chunk = std::clamp<int64_t>(kQuadChunkElems / cols, 1, rows);
  for (absl::Status s : {ws.quad_x.Reserve(chunk * cols), ws.quad_y.Reserve(chunk * cols),
                         ws.row_quad.Reserve(rows)}) {
    if (!s.ok()) return s;
  }
  const double one = 1.0, zero = 0.0;
  const int ci = static_cast<int>(cols);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    if (absl::Status s = internal::LaunchDeltaToF64(
            w + r0 * cols, codes != nullptr ? codes + r0 * cols : nullptr,
            scales != nullptr ? scales + r0 * groups_per_row : nullptr, bits, group_size,
            groups_per_row, nr, cols, ws.quad_x.get(), stream_);
        !s.ok())
      return s;
    // Row-major X [nr, cols] is column-major [cols, nr]; Y = H·X column-major = X·H row-major.
    BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasDgemm(ws.cublas, CUBLAS_OP_N, CUBLAS_OP_N, ci,
                                               static_cast<int>(nr), ci, &one,
                                               factor.buffers_->h.get(), ci, ws.quad_x.get(), ci,
                                               &zero, ws.quad_y.get(), ci));
    if (absl::Status s = internal::LaunchRowDot(ws.quad_x.get(), ws.quad_y.get(), nr, cols,
                                                ws.row_quad.get() + r0, stream_);
        !s.ok())
      return s;
  }
  std::vector<double> per_row(rows);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(per_row.data(), ws.row_quad.get(),
                                               rows * sizeof(double), cudaMemcpyDeviceToHost,
                                               stream_));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  double total = 0.0;
  for (double v : per_row) total += v;  // row order, as the CPU's OutputEnergy
  *sum = total;
  return absl::OkStatus();
}

absl::StatusOr<double> GpuLdlq::OutputEnergy(const float* w, int64_t rows, int64_t cols,
                                             const GpuHessianFactor& factor) {
  if (w == nullptr || rows <= 0 || cols <= 0 || factor.dim() != cols || !factor.buffers_) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq::OutputEnergy: shape [", rows, ", ",
                                                   cols, "] for a factor of dim ", factor.dim()));
  }
  double energy = 0.0;
  if (absl::Status s = QuadraticRows(w, nullptr, nullptr, 1, 32, 0, rows, cols, factor, &energy);
      !s.ok())
    return s;
  return energy;
}

absl::StatusOr<std::vector<QuantizedWeight>> GpuLdlq::Run(const float* w, int64_t rows,
                                                          int64_t cols,
                                                          const GpuHessianFactor& factor,
                                                          absl::Span<const int> bits,
                                                          const ScalarQuantizerOptions& o,
                                                          bool keep_blobs) {
  if (w == nullptr || rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuLdlq: weight of shape [", rows, ", ", cols, "]"));
  }
  if (factor.dim() != cols || !factor.buffers_) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq: Hessian factor of dim ",
                                                   factor.dim(), " for ", cols, " columns"));
  }
  if (bits.empty()) return absl::InvalidArgumentError("GpuLdlq: no code widths");
  std::vector<kernels::ScalarCodecLayout> layouts;
  for (int k : bits) {
    auto layout = kernels::MakeScalarCodecLayout(rows, cols, k, o.group_size);
    if (!layout.ok()) return layout.status();
    layouts.push_back(*layout);
  }
  if (o.group_size > kGpuLdlqMaxGroupSize) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq: group_size ", o.group_size,
                                                   " above the GPU encoder's ",
                                                   kGpuLdlqMaxGroupSize));
  }
  const int64_t block = LdlqBlockFor(o.group_size);
  const int64_t gpr = layouts[0].groups_per_row;
  const int64_t slabs_max = std::min<int64_t>(internal::kMaxStackedWidths,
                                              static_cast<int64_t>(bits.size()));
  if (slabs_max * rows > std::numeric_limits<int>::max() / 2) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq: ", rows, " rows is too many"));
  }

  double energy = o.output_energy;
  if (energy < 0.0) {
    if (absl::Status s =
            QuadraticRows(w, nullptr, nullptr, 1, 32, 0, rows, cols, factor, &energy);
        !s.ok())
      return s;
  }

  Workspace& ws = *ws_;
  const int64_t cap = slabs_max * rows;
  for (absl::Status s : {ws.w_stack.Reserve(cap * cols), ws.codes.Reserve(cap * cols),
                         ws.scales.Reserve(cap * gpr), ws.err.Reserve(cap * block),
                         ws.err_sq.Reserve(cap), ws.damp_sq.Reserve(cap)}) {
    if (!s.ok()) return s;
  }
  const bool exact = options_.exact_proxy_loss || factor.diagonal_fallback() ||
                     factor.relative_damp() > kMaxDampForIdentity;
  const float minus_one = -1.0f, one = 1.0f;
  const int ci = static_cast<int>(cols);
  std::vector<QuantizedWeight> results(bits.size());

  for (size_t first = 0; first < bits.size(); first += internal::kMaxStackedWidths) {
    const int64_t slabs =
        std::min<int64_t>(internal::kMaxStackedWidths, static_cast<int64_t>(bits.size() - first));
    const int64_t total = slabs * rows;
    for (int64_t s = 0; s < slabs; ++s) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          ws.w_stack.get() + s * rows * cols, w, static_cast<size_t>(rows * cols) * sizeof(float),
          cudaMemcpyDeviceToDevice, stream_));
    }
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(ws.err_sq.get(), 0, static_cast<size_t>(total) * sizeof(double), stream_));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        ws.damp_sq.get(), 0, static_cast<size_t>(total) * sizeof(double), stream_));

    internal::LdlqBlockParams p;
    p.rows = rows;
    p.total_rows = total;
    p.cols = cols;
    p.group_size = o.group_size;
    p.groups_per_row = gpr;
    p.clip_steps = o.clip_steps;
    p.min_clip = o.min_clip;
    for (int64_t s = 0; s < slabs; ++s) p.bits[s] = bits[first + s];
    p.block = block;
    p.w = ws.w_stack.get();
    p.w_orig = w;
    p.u = factor.buffers_->u.get();
    p.damp_diag = exact ? nullptr : factor.buffers_->damp_diag.get();
    p.codes = ws.codes.get();
    p.scales = ws.scales.get();
    p.err = ws.err.get();
    p.err_sq = ws.err_sq.get();
    p.damp_sq = ws.damp_sq.get();
    for (int64_t b0 = 0; b0 < cols; b0 += block) {
      const int64_t b1 = std::min(cols, b0 + block);
      p.b0 = b0;
      p.b1 = b1;
      if (absl::Status s = internal::LaunchLdlqBlock(p, stream_); !s.ok()) return s;
      if (b1 == cols) break;
      // W[:, b1:] −= E·U[b0:b1, b1:] for every row of the stack. Column-major view: W[:, b1:]ᵀ
      // is [cols−b1, total] (ld cols), U[b0:b1, b1:]ᵀ is [cols−b1, b1−b0] (ld cols), Eᵀ is
      // [b1−b0, total] (ld block).
      BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSgemm(
          ws.cublas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols - b1),
          static_cast<int>(total), static_cast<int>(b1 - b0), &minus_one,
          factor.buffers_->u.get() + b0 * cols + b1, ci, ws.err.get(), static_cast<int>(block),
          &one, ws.w_stack.get() + b1, ci));
    }

    std::vector<double> err_sq(total), damp_sq(total);
    if (!exact) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(err_sq.data(), ws.err_sq.get(),
                                                   total * sizeof(double),
                                                   cudaMemcpyDeviceToHost, stream_));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(damp_sq.data(), ws.damp_sq.get(),
                                                   total * sizeof(double),
                                                   cudaMemcpyDeviceToHost, stream_));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    }
    for (int64_t s = 0; s < slabs; ++s) {
      const size_t idx = first + s;
      const kernels::ScalarCodecLayout& l = layouts[idx];
      QuantizedWeight& q = results[idx];
      q.layout = l;
      const uint8_t* codes = ws.codes.get() + s * rows * cols;
      const uint16_t* scales = ws.scales.get() + s * rows * gpr;
      double num = 0.0;
      if (exact) {
        if (absl::Status st = QuadraticRows(w, codes, scales, l.bits, l.group_size, gpr, rows,
                                            cols, factor, &num);
            !st.ok())
          return st;
      } else {
        for (int64_t r = s * rows; r < (s + 1) * rows; ++r) num += err_sq[r] - damp_sq[r];
      }
      q.proxy_loss = RelativeLoss(num, energy, /*clamp=*/!exact);
      if (keep_blobs) {
        if (absl::Status st = ws.blob.Reserve(l.total_bytes); !st.ok()) return st;
        internal::PackParams pp;
        pp.rows = rows;
        pp.cols = cols;
        pp.bits = l.bits;
        pp.blocks_per_row = l.blocks_per_row;
        pp.groups_per_row = l.groups_per_row;
        pp.row_stride_words = l.row_stride_words;
        pp.scales_offset = l.scales_offset;
        pp.total_bytes = l.total_bytes;
        pp.codes = codes;
        pp.scales = scales;
        pp.blob = ws.blob.get();
        if (absl::Status st = internal::LaunchPackScalarCodec(pp, stream_); !st.ok()) return st;
        q.blob.resize(l.total_bytes);
        BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.blob.data(), ws.blob.get(), l.total_bytes,
                                                     cudaMemcpyDeviceToHost, stream_));
        BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      }
    }
  }
  return results;
}

absl::StatusOr<std::vector<QuantizedWeight>> GpuLdlq::MeasureDevice(
    const float* w, int64_t rows, int64_t cols, const GpuHessianFactor& factor,
    absl::Span<const int> bits, const ScalarQuantizerOptions& options, bool keep_blobs) {
  return Run(w, rows, cols, factor, bits, options, keep_blobs);
}

absl::StatusOr<std::vector<QuantizedWeight>> GpuLdlq::Measure(
    absl::Span<const float> w, int64_t rows, int64_t cols, const GpuHessianFactor& factor,
    absl::Span<const int> bits, const ScalarQuantizerOptions& options, bool keep_blobs) {
  if (rows <= 0 || cols <= 0 || static_cast<int64_t>(w.size()) != rows * cols) {
    return absl::InvalidArgumentError(absl::StrCat("GpuLdlq: ", w.size(), " weights for shape [",
                                                   rows, ", ", cols, "]"));
  }
  for (float v : w) {
    if (!std::isfinite(v))
      return absl::InvalidArgumentError("GpuLdlq: the weight has a non-finite value");
  }
  if (absl::Status s = ws_->w_in.Reserve(rows * cols); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws_->w_in.get(), w.data(),
                                               w.size() * sizeof(float), cudaMemcpyHostToDevice,
                                               stream_));
  return Run(ws_->w_in.get(), rows, cols, factor, bits, options, keep_blobs);
}

absl::StatusOr<QuantizedWeight> GpuLdlq::Quantize(absl::Span<const float> w, int64_t rows,
                                                  int64_t cols, const GpuHessianFactor& factor,
                                                  const ScalarQuantizerOptions& options) {
  const int k[] = {options.bits};
  auto r = Measure(w, rows, cols, factor, k, options, /*keep_blobs=*/true);
  if (!r.ok()) return r.status();
  return std::move((*r)[0]);
}

absl::StatusOr<QuantizedWeight> GpuLdlq::QuantizeDevice(const float* w, int64_t rows,
                                                        int64_t cols,
                                                        const GpuHessianFactor& factor,
                                                        const ScalarQuantizerOptions& options) {
  const int k[] = {options.bits};
  auto r = Run(w, rows, cols, factor, k, options, /*keep_blobs=*/true);
  if (!r.ok()) return r.status();
  return std::move((*r)[0]);
}

}  // namespace bitloom::quant::cuda
