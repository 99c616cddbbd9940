#include "bitloom/quant/cuda/gpu_quant_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/quant/cuda/gpu_hessian_accumulator.h"
#include "device_array.h"
#include "library_status.h"

namespace bitloom::quant::cuda {

// The legacy default stream: every call of the backend synchronises before it returns anyway.
constexpr cudaStream_t kStream = nullptr;

struct GpuQuantBackend::Staging {
  internal::DeviceArray<float> rows;      // up to kStagingRows activation rows
  internal::DeviceArray<double> hessian;  // [dim, dim]: the mean, rotated in place
  internal::DeviceArray<float> x, w, y;   // Matmul's operands
  cublasHandle_t cublas = nullptr;        // Matmul's, made on first use

  ~Staging() {
    if (cublas != nullptr) cublasDestroy(cublas);
  }
};

namespace {

class GpuSiteHessian final : public SiteHessian {
 public:
  GpuSiteHessian(std::unique_ptr<GpuHessianAccumulator> acc, internal::DeviceArray<float>* staging)
      : acc_(std::move(acc)), staging_(staging) {}

  int64_t dim() const override { return acc_->dim(); }
  int64_t rows() const override { return acc_->rows(); }

  absl::Status Add(absl::Span<const float> x, int64_t rows) override {
    const int64_t dim = acc_->dim();
    if (rows < 0 || static_cast<int64_t>(x.size()) != rows * dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("SiteHessian::Add: ", x.size(), " values for ", rows, " rows of ", dim));
    }
    const int64_t chunk = std::min(rows, GpuQuantBackend::kStagingRows);
    if (absl::Status s = staging_->Reserve(chunk * dim); !s.ok()) return s;
    for (int64_t done = 0; done < rows; done += chunk) {
      const int64_t take = std::min(chunk, rows - done);
      // From pageable memory the copy returns once `x` has been read; the staging buffer is
      // overwritten only after the previous SSYRK, both being on kStream.
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_->get(), x.data() + done * dim,
                                                   static_cast<size_t>(take * dim) * sizeof(float),
                                                   cudaMemcpyHostToDevice, kStream));
      if (absl::Status s = acc_->Add(staging_->get(), ActivationDtype::kF32, take, dim, kStream);
          !s.ok())
        return s;
    }
    return absl::OkStatus();
  }

  bool AcceptsDeviceRows() const override { return true; }

  // Queued on the runner's stream. The backend's later calls run on the legacy default stream,
  // which waits for every blocking stream's earlier work (the runner's stream is one).
  absl::Status AddOnDevice(const float* x, int64_t rows, void* stream) override {
    return acc_->Add(x, ActivationDtype::kF32, rows, acc_->dim(),
                     static_cast<cudaStream_t>(stream));
  }

  absl::StatusOr<HessianAccumulator> ToHost() override { return acc_->ToHost(kStream); }
  GpuHessianAccumulator& accumulator() { return *acc_; }

 private:
  std::unique_ptr<GpuHessianAccumulator> acc_;
  internal::DeviceArray<float>* staging_;
};

struct GpuSiteFactor final : public SiteFactor {
  int64_t dim() const override { return factor.dim(); }
  GpuHessianFactor factor;
};

absl::StatusOr<const GpuHessianFactor*> AsGpu(const SiteFactor& factor) {
  const auto* gpu = dynamic_cast<const GpuSiteFactor*>(&factor);
  if (gpu == nullptr) {
    return absl::InvalidArgumentError("GpuQuantBackend: factor of another backend");
  }
  return &gpu->factor;
}

}  // namespace

bool GpuQuantBackend::DevicePresent() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

GpuQuantBackend::GpuQuantBackend(ThreadPool* pool, std::string description,
                                 std::unique_ptr<GpuLdlq> ldlq,
                                 std::unique_ptr<GpuHessianRotator> rotator)
    : pool_(pool),
      description_(std::move(description)),
      ldlq_(std::move(ldlq)),
      rotator_(std::move(rotator)),
      staging_(std::make_unique<Staging>()) {}

GpuQuantBackend::~GpuQuantBackend() = default;

absl::StatusOr<std::unique_ptr<GpuQuantBackend>> GpuQuantBackend::Create(ThreadPool* pool) {
  if (!DevicePresent()) {
    return absl::FailedPreconditionError("GPU quantization: no CUDA device is visible");
  }
  int device = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  cudaDeviceProp props{};
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, device));
  auto ldlq = GpuLdlq::Create(kStream);
  if (!ldlq.ok()) return ldlq.status();
  auto rotator = GpuHessianRotator::Create();
  if (!rotator.ok()) return rotator.status();
  return std::unique_ptr<GpuQuantBackend>(new GpuQuantBackend(
      pool, absl::StrCat("gpu: ", props.name), std::move(*ldlq), std::move(*rotator)));
}

absl::StatusOr<std::unique_ptr<SiteHessian>> GpuQuantBackend::NewHessian(int64_t dim) {
  // TF32 products: the capture passes' Hessians on the tensor cores (docs/QUANTIZATION.md,
  // section 9; the rounding is far below the damping).
  auto acc = GpuHessianAccumulator::Create(dim, {.tf32_products = true});
  if (!acc.ok()) return acc.status();
  return std::make_unique<GpuSiteHessian>(std::move(*acc), &staging_->rows);
}

absl::StatusOr<std::unique_ptr<SiteFactor>> GpuQuantBackend::Factor(
    SiteHessian& hessian, const kernels::HadamardRotation& rotation,
    const DampingOptions& damping) {
  auto* gpu = dynamic_cast<GpuSiteHessian*>(&hessian);
  if (gpu == nullptr) {
    return absl::InvalidArgumentError("GpuQuantBackend: Hessian of another backend");
  }
  const int64_t n = hessian.dim();
  if (rotation.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuQuantBackend: rotation of width ", rotation.size(), " for dim ", n));
  }
  // The mean, R·H·Rᵀ (fp64) and the factorisation, all on the device: the rotated mean never
  // visits the host (a 2 × 1.6 GB round trip per block at dim 14336 before).
  internal::DeviceArray<double>& h = staging_->hessian;
  if (absl::Status s = h.Reserve(n * n); !s.ok()) return s;
  if (absl::Status s = gpu->accumulator().MeanToDevice(h.get(), kStream); !s.ok()) return s;
  if (absl::Status s = rotator_->Rotate(h.get(), rotation, pool_, kStream); !s.ok()) return s;
  auto factor = ldlq_->FactorDevice(h.get(), n, damping);
  if (!factor.ok()) return factor.status();
  auto out = std::make_unique<GpuSiteFactor>();
  out->factor = std::move(*factor);
  return out;
}

absl::StatusOr<QuantizedWeight> GpuQuantBackend::Quantize(absl::Span<const float> w, int64_t rows,
                                                          int64_t cols, const SiteFactor& factor,
                                                          const ScalarQuantizerOptions& options) {
  auto gpu = AsGpu(factor);
  if (!gpu.ok()) return gpu.status();
  return ldlq_->Quantize(w, rows, cols, **gpu, options);
}

absl::StatusOr<std::vector<QuantizedWeight>> GpuQuantBackend::Measure(
    absl::Span<const float> w, int64_t rows, int64_t cols, const SiteFactor& factor,
    absl::Span<const int> bits, const ScalarQuantizerOptions& options, int blob_bits) {
  auto gpu = AsGpu(factor);
  if (!gpu.ok()) return gpu.status();
  const bool keep = std::find(bits.begin(), bits.end(), blob_bits) != bits.end();
  auto out = ldlq_->Measure(w, rows, cols, **gpu, bits, options, keep);
  if (!out.ok()) return out.status();
  bool kept = false;
  for (size_t i = 0; i < out->size(); ++i) {
    if (bits[i] == blob_bits && !kept) {
      kept = true;
    } else {
      (*out)[i].blob = {};
    }
  }
  return out;
}

absl::Status GpuQuantBackend::Matmul(const kernels::MatmulF32Params& p) {
  if (p.x == nullptr || p.w == nullptr || p.y == nullptr || p.m < 0 || p.n < 0 || p.k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("GpuQuantBackend::Matmul: m ", p.m, ", n ", p.n,
                                                   ", k ", p.k, " or a null pointer"));
  }
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  const int64_t limit = int64_t{1} << 31;
  if (p.m >= limit || p.n >= limit || p.k >= limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuQuantBackend::Matmul: m ", p.m, ", n ", p.n, ", k ", p.k, " exceed int"));
  }
  Staging& st = *staging_;
  if (st.cublas == nullptr) {
    BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&st.cublas));
    BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(st.cublas, CUBLAS_DEFAULT_MATH));
  }
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(st.cublas, kStream));
  BITLOOM_RETURN_IF_ERROR(st.x.Reserve(std::max<int64_t>(p.m * p.k, 1)));
  BITLOOM_RETURN_IF_ERROR(st.w.Reserve(std::max<int64_t>(p.n * p.k, 1)));
  BITLOOM_RETURN_IF_ERROR(st.y.Reserve(p.m * p.n));
  const auto bytes = [](int64_t count) { return static_cast<size_t>(count) * sizeof(float); };
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(st.x.get(), p.x, bytes(p.m * p.k), cudaMemcpyHostToDevice, kStream));
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(st.w.get(), p.w, bytes(p.n * p.k), cudaMemcpyHostToDevice, kStream));
  // Row-major y [m, n] = x·wᵀ is column-major yᵀ [n, m] = w·xᵀ: w is column-major [k, n] (ld k)
  // transposed, x column-major [k, m] (ld k).
  const float one = 1.0f, zero = 0.0f;
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSgemm(st.cublas, CUBLAS_OP_T, CUBLAS_OP_N,
                                             static_cast<int>(p.n), static_cast<int>(p.m),
                                             static_cast<int>(p.k), &one, st.w.get(),
                                             static_cast<int>(p.k), st.x.get(),
                                             static_cast<int>(p.k), &zero, st.y.get(),
                                             static_cast<int>(p.n)));
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p.y, st.y.get(), bytes(p.m * p.n), cudaMemcpyDeviceToHost, kStream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(kStream));
  if (p.bias != nullptr) {
    for (int64_t r = 0; r < p.m; ++r) {
      for (int64_t c = 0; c < p.n; ++c) p.y[r * p.n + c] += p.bias[c];
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda
