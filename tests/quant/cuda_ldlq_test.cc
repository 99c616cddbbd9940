// GPU vs CPU for the quantizer's GPU path (libs/quant/cuda): GpuHessianAccumulator against
// HessianAccumulator, GpuLdlq::Factor against FactorHessian (damping retries and the diagonal
// fallback included), and GpuLdlq's LDLQ at every code width against QuantizeLdlq on random and
// correlated Hessians, odd shapes included. Skips when no GPU is present (CI).
//
// Tolerances. The GPU's per-row arithmetic is the CPU's, operation for operation; what differs is
// the summation order of the lazy rank-128 update (cuBLAS SGEMM) and U's last bits (cuSOLVER's
// Cholesky), which can flip a code that sits on a rounding tie, and a flipped code changes the
// error fed to the rest of its row. So codes must agree on ≥ 99% of weights (in practice far more)
// and proxy losses within 1% relative. Hessians: fp32 sums of ≤ flush_rows terms vs the CPU's fp64,
// so |ΔH_ij| ≤ 1e-5·√(H_ii·H_jj).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bitloom/core/dtype.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/matmul_f32.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/quant/cuda/gpu_hessian_accumulator.h"
#include "bitloom/quant/cuda/gpu_ldlq.h"
#include "bitloom/quant/cuda/gpu_quant_backend.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "test_util.h"

namespace bitloom::quant::cuda {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)"

constexpr double kMinCodeAgreement = 0.99;
constexpr double kLossRelTolerance = 0.01;
constexpr double kHessianTolerance = 1e-5;
// TF32 products (GpuHessianOptions::tf32_products): both factors rounded to a 10-bit mantissa.
constexpr double kHessianTf32Tolerance = 2.5e-3;

ThreadPool& Pool() {
  static ThreadPool* pool = new ThreadPool(0);
  return *pool;
}

// Owns one device allocation.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  template <typename T>
  void Upload(const std::vector<T>& v) {
    ASSERT_EQ(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }

 private:
  void* ptr_ = nullptr;
};

enum class HessianKind { kRandom, kCorrelated };

struct Problem {
  int64_t rows = 0, cols = 0;
  std::vector<float> w;   // rotated space
  std::vector<double> h;  // rotated space, undamped
};

// A layer in rotated space as the pipeline hands it to the encoders: iid Gaussian inputs (random
// H, well spread spectrum) or correlated inputs with an outlier channel (test_util.h).
Problem MakeProblem(int64_t rows, int64_t cols, HessianKind kind, uint64_t seed) {
  Problem p;
  p.rows = rows;
  p.cols = cols;
  p.w = testing::Gaussian(rows * cols, seed, 0.02f);
  const int64_t calib = std::max<int64_t>(256, 2 * cols);
  const std::vector<float> x = kind == HessianKind::kRandom
                                   ? testing::Gaussian(calib * cols, seed + 1)
                                   : testing::CorrelatedInputs(calib, cols, seed + 1);
  HessianAccumulator acc(cols);
  EXPECT_TRUE(acc.Add(x, calib, &Pool()).ok());
  p.h = acc.Mean();
  const auto rot = kernels::HadamardRotation::Create(cols, seed + 2);
  EXPECT_TRUE(rot.ok());
  EXPECT_TRUE(RotateHessian(*rot, &p.h, &Pool()).ok());
  rot->Apply(p.w.data(), rows, &Pool());
  return p;
}

struct Decoded {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
};

Decoded Unpack(const QuantizedWeight& q) {
  Decoded d;
  EXPECT_TRUE(kernels::UnpackScalarCodec(q.layout, q.blob, &d.codes, &d.scales).ok());
  return d;
}

double Agreement(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size() || a.empty()) return 0.0;
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(a.size());
}

// One GPU Measure call at K = 1..8 (blobs kept) against the CPU at each K.
void CheckAgainstCpu(GpuLdlq& gpu, const Problem& p, int group_size, const char* label) {
  SCOPED_TRACE(::testing::Message() << label << " [" << p.rows << ", " << p.cols
                                    << "] group=" << group_size);
  absl::StatusOr<HessianFactor> cpu_factor = FactorHessian(p.h, p.cols, {}, &Pool());
  ASSERT_TRUE(cpu_factor.ok()) << cpu_factor.status();
  absl::StatusOr<GpuHessianFactor> factor = gpu.Factor(p.h, p.cols, {});
  ASSERT_TRUE(factor.ok()) << factor.status();
  EXPECT_EQ(factor->attempts(), cpu_factor->attempts);
  EXPECT_EQ(factor->diagonal_fallback(), cpu_factor->diagonal_fallback);

  ScalarQuantizerOptions o;
  o.group_size = group_size;
  const std::vector<int> widths = {1, 2, 3, 4, 5, 6, 7, 8};
  absl::StatusOr<std::vector<QuantizedWeight>> got =
      gpu.Measure(p.w, p.rows, p.cols, *factor, widths, o, /*keep_blobs=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), widths.size());
  for (size_t k = 0; k < widths.size(); ++k) {
    SCOPED_TRACE(::testing::Message() << "K=" << widths[k]);
    o.bits = widths[k];
    absl::StatusOr<QuantizedWeight> want =
        QuantizeLdlq(p.w, p.rows, p.cols, p.h, *cpu_factor, o, &Pool());
    ASSERT_TRUE(want.ok()) << want.status();
    const QuantizedWeight& g = (*got)[k];
    EXPECT_EQ(g.layout.total_bytes, want->layout.total_bytes);
    EXPECT_EQ(g.layout.bits, widths[k]);
    ASSERT_EQ(g.blob.size(), want->blob.size());
    const Decoded dg = Unpack(g), dw = Unpack(*want);
    const double agree = Agreement(dg.codes, dw.codes);
    EXPECT_GE(agree, kMinCodeAgreement);
    EXPECT_NEAR(g.proxy_loss, want->proxy_loss, kLossRelTolerance * want->proxy_loss);
    // The device packer is PackScalarCodec byte for byte (padding included).
    absl::StatusOr<std::vector<uint8_t>> repacked =
        kernels::PackScalarCodec(g.layout, dg.codes, dg.scales);
    ASSERT_TRUE(repacked.ok());
    EXPECT_TRUE(*repacked == g.blob) << "device pack differs from PackScalarCodec";
    ::testing::Test::RecordProperty(
        (std::string(label) + "_" + std::to_string(p.rows) + "x" + std::to_string(p.cols) + "_g" +
         std::to_string(group_size) + "_k" + std::to_string(widths[k]))
            .c_str(),
        "agree " + std::to_string(agree) + " loss gpu " + std::to_string(g.proxy_loss) + " cpu " +
            std::to_string(want->proxy_loss));
  }
}

TEST(CudaLdlq, MatchesCpuOnRandomAndCorrelatedHessians) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<GpuLdlq>> gpu = GpuLdlq::Create(nullptr);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int64_t shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {33, 200}};
  uint64_t seed = 100;
  for (const auto& s : shapes) {
    for (HessianKind kind : {HessianKind::kRandom, HessianKind::kCorrelated}) {
      const Problem p = MakeProblem(s[0], s[1], kind, seed += 10);
      for (int group : {32, 128}) {
        CheckAgainstCpu(**gpu, p, group, kind == HessianKind::kRandom ? "random" : "correlated");
      }
    }
  }
}

TEST(CudaLdlq, FactorMatchesCpu) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<GpuLdlq>> gpu = GpuLdlq::Create(nullptr);
  ASSERT_TRUE(gpu.ok());
  for (int64_t n : {1, 7, 200, 576}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const Problem p = MakeProblem(1, n, HessianKind::kCorrelated, 7 + n);
    absl::StatusOr<HessianFactor> want = FactorHessian(p.h, n, {}, &Pool());
    ASSERT_TRUE(want.ok());
    HessianFactor got;
    ASSERT_TRUE((*gpu)->Factor(p.h, n, {}, &got).ok());
    EXPECT_EQ(got.dim, n);
    EXPECT_EQ(got.attempts, want->attempts);
    EXPECT_EQ(got.relative_damp, want->relative_damp);
    EXPECT_EQ(got.added_diagonal, want->added_diagonal);
    double umax = 0.0, diff = 0.0;
    for (int64_t i = 0; i < n * n; ++i) {
      umax = std::max(umax, std::abs(want->u[i]));
      diff = std::max(diff, std::abs(got.u[i] - want->u[i]));
      if (i / n > i % n) {
        ASSERT_EQ(got.u[i], 0.0) << "U not upper triangular at " << i;
      }
    }
    EXPECT_LE(diff, 1e-9 * umax);
  }
}

// 2·11ᵀ − 1.5·I: eigenvalues 2n − 1.5 and −1.5 (n − 1 times); mean(diag) = 0.5, so λ = 0.01,
// 0.1, 1 fail and λ = 10 succeeds on the 4th attempt; with max_attempts 2 it falls back to diag.
std::vector<double> IndefiniteHessian(int64_t n) {
  std::vector<double> h(n * n, 2.0);
  for (int64_t i = 0; i < n; ++i) h[i * n + i] = 0.5;
  return h;
}

TEST(CudaLdlq, NonPositiveDefiniteHessianTakesTheDampingPath) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<GpuLdlq>> gpu = GpuLdlq::Create(nullptr);
  ASSERT_TRUE(gpu.ok());
  const int64_t n = 128, rows = 64;
  const std::vector<double> h = IndefiniteHessian(n);
  const std::vector<float> w = testing::Gaussian(rows * n, 5, 0.02f);
  for (int max_attempts : {5, 2}) {
    SCOPED_TRACE(::testing::Message() << "max_attempts=" << max_attempts);
    DampingOptions d;
    d.max_attempts = max_attempts;
    absl::StatusOr<HessianFactor> want = FactorHessian(h, n, d, &Pool());
    ASSERT_TRUE(want.ok());
    absl::StatusOr<GpuHessianFactor> got = (*gpu)->Factor(h, n, d);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->attempts(), want->attempts);
    EXPECT_EQ(got->relative_damp(), want->relative_damp);
    EXPECT_EQ(got->diagonal_fallback(), want->diagonal_fallback);
    if (max_attempts == 5) {
      EXPECT_EQ(got->attempts(), 4);
      EXPECT_FALSE(got->diagonal_fallback());
    } else {
      EXPECT_EQ(got->attempts(), 3);
      EXPECT_TRUE(got->diagonal_fallback());
    }
    ScalarQuantizerOptions o;
    o.bits = 3;
    absl::StatusOr<QuantizedWeight> g = (*gpu)->Quantize(w, rows, n, *got, o);
    ASSERT_TRUE(g.ok()) << g.status();
    absl::StatusOr<QuantizedWeight> c = QuantizeLdlq(w, rows, n, h, *want, o, &Pool());
    ASSERT_TRUE(c.ok());
    EXPECT_GE(Agreement(Unpack(*g).codes, Unpack(*c).codes), kMinCodeAgreement);
    EXPECT_TRUE(std::isfinite(g->proxy_loss));
  }
}

TEST(CudaLdlq, ExactAndScaledErrorLossesAgreeAndRunsAreDeterministic) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<GpuLdlq>> fast = GpuLdlq::Create(nullptr);
  GpuLdlqOptions eo;
  eo.exact_proxy_loss = true;
  absl::StatusOr<std::unique_ptr<GpuLdlq>> exact = GpuLdlq::Create(nullptr, eo);
  ASSERT_TRUE(fast.ok() && exact.ok());
  const Problem p = MakeProblem(100, 384, HessianKind::kCorrelated, 77);
  absl::StatusOr<GpuHessianFactor> factor = (*fast)->Factor(p.h, p.cols, {});
  ASSERT_TRUE(factor.ok());
  const std::vector<int> widths = {2, 4, 8};
  ScalarQuantizerOptions o;
  auto a = (*fast)->Measure(p.w, p.rows, p.cols, *factor, widths, o, true);
  auto b = (*exact)->Measure(p.w, p.rows, p.cols, *factor, widths, o, true);
  auto c = (*fast)->Measure(p.w, p.rows, p.cols, *factor, widths, o, true);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t k = 0; k < widths.size(); ++k) {
    EXPECT_TRUE((*a)[k].blob == (*b)[k].blob);
    EXPECT_TRUE((*a)[k].blob == (*c)[k].blob);
    EXPECT_EQ((*a)[k].proxy_loss, (*c)[k].proxy_loss);
    EXPECT_NEAR((*a)[k].proxy_loss, (*b)[k].proxy_loss, 5e-3 * (*b)[k].proxy_loss);
  }
  // Without blobs: the same losses, empty blobs.
  auto m = (*fast)->Measure(p.w, p.rows, p.cols, *factor, widths, o);
  ASSERT_TRUE(m.ok());
  for (size_t k = 0; k < widths.size(); ++k) {
    EXPECT_TRUE((*m)[k].blob.empty());
    EXPECT_EQ((*m)[k].proxy_loss, (*a)[k].proxy_loss);
  }
  // The device-weight entry point and the energy.
  DeviceBuffer dw(p.w.size() * 4);
  dw.Upload(p.w);
  o.bits = 4;
  auto q = (*fast)->QuantizeDevice(dw.as<float>(), p.rows, p.cols, *factor, o);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GE(Agreement(Unpack(*q).codes, Unpack((*a)[1]).codes), kMinCodeAgreement);
  auto energy = (*fast)->OutputEnergy(dw.as<float>(), p.rows, p.cols, *factor);
  ASSERT_TRUE(energy.ok());
  const double want = quant::OutputEnergy(p.w, p.rows, p.cols, p.h, &Pool());
  // fp32 products on the GPU (fp64 sums) against the CPU's: agreement to ~1e-7 relative.
  EXPECT_NEAR(*energy, want, 1e-6 * want);
}

TEST(CudaLdlq, RejectsBadInput) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<GpuLdlq>> gpu = GpuLdlq::Create(nullptr);
  ASSERT_TRUE(gpu.ok());
  const Problem p = MakeProblem(8, 64, HessianKind::kRandom, 3);
  std::vector<double> bad_h = p.h;
  bad_h[5] = NAN;
  EXPECT_EQ((*gpu)->Factor(bad_h, 64, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*gpu)->Factor(p.h, 63, {}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<GpuHessianFactor> factor = (*gpu)->Factor(p.h, 64, {});
  ASSERT_TRUE(factor.ok());
  ScalarQuantizerOptions o;
  o.bits = 9;
  EXPECT_EQ((*gpu)->Quantize(p.w, 8, 64, *factor, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.bits = 4;
  o.group_size = 1024;
  EXPECT_EQ((*gpu)->Quantize(p.w, 8, 64, *factor, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.group_size = 128;
  EXPECT_EQ((*gpu)->Quantize(p.w, 16, 32, *factor, o).status().code(),
            absl::StatusCode::kInvalidArgument);  // factor of dim 64 for 32 columns
  std::vector<float> bad_w = p.w;
  bad_w[3] = INFINITY;
  EXPECT_EQ((*gpu)->Quantize(bad_w, 8, 64, *factor, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*gpu)->Measure(p.w, 8, 64, *factor, {}, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Hessian accumulation

void CheckHessian(int64_t dim, ActivationDtype dtype, int64_t flush_rows, bool tf32 = false) {
  SCOPED_TRACE(::testing::Message() << "dim=" << dim << " f16=" << (dtype == ActivationDtype::kF16)
                                    << " flush=" << flush_rows << " tf32=" << tf32);
  const int64_t pieces[] = {1, 37, 300, 811, 64};  // uneven, crossing the flush boundary
  int64_t total = 0;
  for (int64_t r : pieces) total += r;
  std::vector<float> x = testing::CorrelatedInputs(total, dim, dim + 11);
  std::vector<uint16_t> x16(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x16[i] = F32ToF16(x[i]);
    if (dtype == ActivationDtype::kF16) x[i] = F16ToF32(x16[i]);  // the CPU sees what the GPU reads
  }
  GpuHessianOptions go;
  go.flush_rows = flush_rows;
  go.tf32_products = tf32;
  absl::StatusOr<std::unique_ptr<GpuHessianAccumulator>> acc = GpuHessianAccumulator::Create(dim, go);
  ASSERT_TRUE(acc.ok()) << acc.status();
  HessianAccumulator cpu(dim);
  DeviceBuffer d_x(x.size() * 4);
  if (dtype == ActivationDtype::kF16) {
    d_x.Upload(x16);
  } else {
    d_x.Upload(x);
  }
  const size_t elem = dtype == ActivationDtype::kF16 ? 2 : 4;
  int64_t r0 = 0;
  for (int64_t r : pieces) {
    ASSERT_TRUE((*acc)->Add(d_x.as<char>() + r0 * dim * elem, dtype, r, 0, nullptr).ok());
    ASSERT_TRUE(cpu.Add(absl::MakeConstSpan(x).subspan(r0 * dim, r * dim), r, &Pool()).ok());
    r0 += r;
  }
  EXPECT_EQ((*acc)->rows(), total);
  absl::StatusOr<std::vector<double>> got = (*acc)->Mean(nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<double> want = cpu.Mean();
  double worst = 0.0, err2 = 0.0, ref2 = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const double d = (*got)[i * dim + j] - want[i * dim + j];
      const double scale = std::sqrt(want[i * dim + i] * want[j * dim + j]);
      worst = std::max(worst, std::abs(d) / scale);
      err2 += d * d;
      ref2 += want[i * dim + j] * want[i * dim + j];
    }
  }
  const double tolerance =
      tf32 && dtype == ActivationDtype::kF32 ? kHessianTf32Tolerance : kHessianTolerance;
  EXPECT_LE(worst, tolerance);
  EXPECT_LE(std::sqrt(err2 / ref2), tolerance);
  std::printf("Hessian dim %lld f16 %d flush %lld tf32 %d: worst %.3g of sqrt(Hii Hjj)\n",
              static_cast<long long>(dim), dtype == ActivationDtype::kF16 ? 1 : 0,
              static_cast<long long>(flush_rows), tf32 ? 1 : 0, worst);

  // MeanToDevice writes the same matrix; ToHost carries the row count and the sums.
  DeviceBuffer d_mean(dim * dim * 8);
  ASSERT_TRUE((*acc)->MeanToDevice(d_mean.as<double>(), nullptr).ok());
  std::vector<double> dev(dim * dim);
  ASSERT_EQ(cudaMemcpy(dev.data(), d_mean.as<double>(), dev.size() * 8, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_TRUE(dev == *got);
  absl::StatusOr<HessianAccumulator> host = (*acc)->ToHost(nullptr);
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->rows(), total);
  EXPECT_TRUE(host->Mean() == *got);
  ASSERT_TRUE((*acc)->Reset(nullptr).ok());
  EXPECT_EQ((*acc)->rows(), 0);
  absl::StatusOr<std::vector<double>> zero = (*acc)->Mean(nullptr);
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE(std::all_of(zero->begin(), zero->end(), [](double v) { return v == 0.0; }));
}

TEST(CudaHessianAccumulator, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int64_t dim : {200, 576}) {
    for (ActivationDtype dtype : {ActivationDtype::kF32, ActivationDtype::kF16}) {
      for (int64_t flush : {100, 8192}) CheckHessian(dim, dtype, flush);
    }
    CheckHessian(dim, ActivationDtype::kF32, 8192, /*tf32=*/true);
  }
}

TEST(CudaHessianAccumulator, RejectsBadInput) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(GpuHessianAccumulator::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<GpuHessianAccumulator>> acc = GpuHessianAccumulator::Create(16);
  ASSERT_TRUE(acc.ok());
  DeviceBuffer x(16 * 4 * 4);
  EXPECT_EQ((*acc)->Add(x.as<void>(), ActivationDtype::kF32, 4, 8, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // ld < dim
  EXPECT_EQ((*acc)->Add(nullptr, ActivationDtype::kF32, 4, 0, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*acc)->Add(x.as<void>(), ActivationDtype::kF32, 0, 0, nullptr).ok());
}

// GpuQuantBackend::Matmul (the output Fisher's products) against MatmulF32: odd shapes, a bias,
// one row, an empty product, a null operand.
TEST(CudaQuantBackend, MatmulMatchesCpu) {
  SKIP_WITHOUT_GPU();
  auto backend = GpuQuantBackend::Create(&Pool());
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (const auto [m, n, k] : {std::array<int64_t, 3>{37, 53, 200}, {1, 576, 576}, {300, 7, 4097}}) {
    std::vector<float> x(m * k), w(n * k), bias(n), want(m * n), got(m * n, -1.0f);
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    for (float& v : bias) v = normal(rng);
    ASSERT_TRUE(kernels::MatmulF32({x.data(), w.data(), bias.data(), want.data(), m, n, k}, &Pool()).ok());
    ASSERT_TRUE((*backend)->Matmul({x.data(), w.data(), bias.data(), got.data(), m, n, k}).ok());
    double worst = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(double(got[i]) - want[i]) / std::sqrt(double(k)));
    }
    EXPECT_LE(worst, 1e-5) << m << "x" << n << "x" << k;
  }
  std::vector<float> one(4, 1.0f), out(4, 7.0f);
  EXPECT_TRUE((*backend)->Matmul({one.data(), one.data(), nullptr, out.data(), 0, 2, 2}).ok());
  EXPECT_EQ(out[0], 7.0f);
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*backend)->Matmul({nullptr, one.data(), nullptr, out.data(), 2, 2, 2})));
}

}  // namespace
}  // namespace bitloom::quant::cuda
