#include "bitloom/quant/cuda/gpu_hessian_rotation.h"

#include <cublas_v2.h>

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "device_array.h"
#include "library_status.h"

namespace bitloom::quant::cuda {

using internal::DeviceArray;

struct GpuHessianRotator::State {
  cublasHandle_t cublas = nullptr;
  std::map<int64_t, DeviceArray<double>> base;  // width -> R₀, column-major [n, n]
  DeviceArray<double> signs;                    // [n] of the current call
  DeviceArray<double> r;                        // R = R₀·D, column-major [n, n]
  DeviceArray<double> t;                        // R·H

  ~State() {
    if (cublas != nullptr) cublasDestroy(cublas);
  }
};

GpuHessianRotator::GpuHessianRotator(std::unique_ptr<State> state) : state_(std::move(state)) {}

GpuHessianRotator::~GpuHessianRotator() = default;

absl::StatusOr<std::unique_ptr<GpuHessianRotator>> GpuHessianRotator::Create() {
  auto state = std::make_unique<State>();
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&state->cublas));
  // fp64 GEMMs are exact-fp64 in every math mode; the default keeps it explicit.
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(state->cublas, CUBLAS_DEFAULT_MATH));
  return std::unique_ptr<GpuHessianRotator>(new GpuHessianRotator(std::move(state)));
}

absl::Status GpuHessianRotator::Rotate(double* h, const kernels::HadamardRotation& rotation,
                                       ThreadPool* pool, cudaStream_t stream) {
  const int64_t n = rotation.size();
  if (h == nullptr || n <= 0 || n > 46340) {  // n² must fit cuBLAS's int sizes
    return absl::InvalidArgumentError(
        absl::StrCat("GpuHessianRotator: ", h == nullptr ? "null Hessian" : "width ", n));
  }
  State& s = *state_;
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(s.cublas, stream));
  const std::vector<float>& signs = rotation.signs();
  auto base = s.base.find(n);
  if (base == s.base.end()) {
    // Row i of R·I (each row rotated) is R·e_i, column i of R; stored row after row, that is R
    // column-major. Column i of R₀ is column i of R divided by sign i (±1: exact).
    std::vector<double> r0(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i) r0[i * n + i] = 1.0;
    rotation.Apply(r0.data(), n, pool);
    for (int64_t i = 0; i < n; ++i) {
      if (signs[i] < 0.0f) {
        for (int64_t k = 0; k < n; ++k) r0[i * n + k] = -r0[i * n + k];
      }
    }
    DeviceArray<double> device;
    if (absl::Status st = device.Reserve(n * n); !st.ok()) return st;
    // From pageable memory the copy has read r0 when it returns.
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        device.get(), r0.data(), r0.size() * sizeof(double), cudaMemcpyHostToDevice, stream));
    base = s.base.emplace(n, std::move(device)).first;
  }
  for (absl::Status st : {s.signs.Reserve(n), s.r.Reserve(n * n), s.t.Reserve(n * n)}) {
    if (!st.ok()) return st;
  }
  const std::vector<double> d(signs.begin(), signs.end());
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.signs.get(), d.data(), d.size() * sizeof(double),
                                               cudaMemcpyHostToDevice, stream));
  const int ni = static_cast<int>(n);
  // R = R₀·diag(signs), then T = R·H and H = T·Rᵀ (column-major; H symmetric, so its row-major
  // storage is the same matrix).
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasDdgmm(s.cublas, CUBLAS_SIDE_RIGHT, ni, ni,
                                             base->second.get(), ni, s.signs.get(), 1, s.r.get(),
                                             ni));
  const double one = 1.0, zero = 0.0;
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasDgemm(s.cublas, CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one,
                                             s.r.get(), ni, h, ni, &zero, s.t.get(), ni));
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasDgemm(s.cublas, CUBLAS_OP_N, CUBLAS_OP_T, ni, ni, ni, &one,
                                             s.t.get(), ni, s.r.get(), ni, &zero, h, ni));
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda
