#include "bitloom/quant/cuda/gpu_hessian_accumulator.h"

#include <cublas_v2.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "device_array.h"
#include "hessian_kernels.h"
#include "library_status.h"

namespace bitloom::quant::cuda {

using internal::DeviceArray;

struct GpuHessianAccumulator::State {
  cublasHandle_t cublas = nullptr;
  DeviceArray<float> partial;  // [dim, dim] fp32; upper triangle (row-major) valid
  DeviceArray<double> sum;     // [dim, dim] fp64; upper triangle maintained, lower stays 0

  ~State() {
    if (cublas != nullptr) cublasDestroy(cublas);
  }
};

GpuHessianAccumulator::GpuHessianAccumulator(int64_t dim, const GpuHessianOptions& options,
                                             std::unique_ptr<State> state)
    : dim_(dim), options_(options), state_(std::move(state)) {}

GpuHessianAccumulator::~GpuHessianAccumulator() = default;

absl::StatusOr<std::unique_ptr<GpuHessianAccumulator>> GpuHessianAccumulator::Create(
    int64_t dim, const GpuHessianOptions& options) {
  if (dim <= 0 || options.flush_rows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("GpuHessianAccumulator: dim ", dim,
                                                   ", flush_rows ", options.flush_rows));
  }
  auto state = std::make_unique<State>();
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&state->cublas));
  // The default math mode never rounds fp32 inputs to TF32 (that needs CUBLAS_TF32_TENSOR_OP_MATH
  // or CUBLAS_COMPUTE_32F_FAST_TF32), and still runs fp16 GemmEx on the tensor cores.
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(state->cublas, CUBLAS_DEFAULT_MATH));
  if (absl::Status s = state->partial.Reserve(dim * dim); !s.ok()) return s;
  if (absl::Status s = state->sum.Reserve(dim * dim); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemset(state->sum.get(), 0, static_cast<size_t>(dim * dim) * sizeof(double)));
  // cudaMemset runs on the legacy default stream, which a non-blocking caller stream does not
  // wait for.
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return std::unique_ptr<GpuHessianAccumulator>(
      new GpuHessianAccumulator(dim, options, std::move(state)));
}

absl::Status GpuHessianAccumulator::Add(const void* x, ActivationDtype dtype, int64_t rows,
                                        int64_t ld, cudaStream_t stream) {
  if (ld == 0) ld = dim_;
  if (rows < 0 || ld < dim_ || (rows > 0 && x == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("GpuHessianAccumulator::Add: ", rows,
                                                   " rows, ld ", ld, " for dim ", dim_));
  }
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(state_->cublas, stream));
  const size_t elem = dtype == ActivationDtype::kF16 ? 2 : 4;
  const int n = static_cast<int>(dim_);
  int64_t done = 0;
  while (done < rows) {
    const int64_t take = std::min(rows - done, options_.flush_rows - partial_rows_);
    const void* piece = static_cast<const char*>(x) + static_cast<size_t>(done * ld) * elem;
    const float one = 1.0f;
    const float beta = partial_rows_ > 0 ? 1.0f : 0.0f;
    // X row-major [take, dim] is column-major Xc [dim, take] (ld); XᵀX = Xc·Xcᵀ. Column-major
    // lower = row-major upper, the triangle the fold reads.
    if (dtype == ActivationDtype::kF32 && options_.tf32_products) {
      BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
          state_->cublas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, static_cast<int>(take), &one, piece,
          CUDA_R_32F, static_cast<int>(ld), piece, CUDA_R_32F, static_cast<int>(ld), &beta,
          state_->partial.get(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    } else if (dtype == ActivationDtype::kF32) {
      BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSsyrk(
          state_->cublas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, static_cast<int>(take), &one,
          static_cast<const float*>(piece), static_cast<int>(ld), &beta, state_->partial.get(),
          n));
    } else {
      BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
          state_->cublas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, static_cast<int>(take), &one, piece,
          CUDA_R_16F, static_cast<int>(ld), piece, CUDA_R_16F, static_cast<int>(ld), &beta,
          state_->partial.get(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    partial_rows_ += take;
    rows_ += take;
    done += take;
    if (partial_rows_ == options_.flush_rows) {
      if (absl::Status s = Flush(stream); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status GpuHessianAccumulator::Flush(cudaStream_t stream) {
  if (partial_rows_ == 0) return absl::OkStatus();
  if (absl::Status s = internal::LaunchFoldPartial(state_->partial.get(), state_->sum.get(), dim_,
                                                   stream);
      !s.ok())
    return s;
  partial_rows_ = 0;
  return absl::OkStatus();
}

absl::Status GpuHessianAccumulator::MeanToDevice(double* out, cudaStream_t stream) {
  if (out == nullptr) return absl::InvalidArgumentError("GpuHessianAccumulator::Mean: null out");
  if (absl::Status s = Flush(stream); !s.ok()) return s;
  const double inv = rows_ > 0 ? 1.0 / static_cast<double>(rows_) : 0.0;
  return internal::LaunchWriteMean(state_->sum.get(), inv, out, dim_, stream);
}

absl::StatusOr<std::vector<double>> GpuHessianAccumulator::Mean(cudaStream_t stream) {
  absl::StatusOr<HessianAccumulator> host = ToHost(stream);
  if (!host.ok()) return host.status();
  return host->Mean();  // the CPU's own Mean(): identical rounding
}

absl::StatusOr<HessianAccumulator> GpuHessianAccumulator::ToHost(cudaStream_t stream) {
  if (absl::Status s = Flush(stream); !s.ok()) return s;
  std::vector<double> sum(dim_ * dim_);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sum.data(), state_->sum.get(),
                                               sum.size() * sizeof(double),
                                               cudaMemcpyDeviceToHost, stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return HessianAccumulator::Restore(dim_, rows_, std::move(sum));
}

absl::Status GpuHessianAccumulator::Reset(cudaStream_t stream) {
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      state_->sum.get(), 0, static_cast<size_t>(dim_ * dim_) * sizeof(double), stream));
  rows_ = 0;
  partial_rows_ = 0;
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda
