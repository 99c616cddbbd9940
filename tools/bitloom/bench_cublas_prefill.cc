#include "bench_cublas_prefill.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::tools {
namespace {

struct LinearShape {
  int64_t out, in;
  int per_layer;  // how many of the layer's linears have this shape
};

absl::Status Cublas(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed: cuBLAS status ", static_cast<int>(s)));
}

}  // namespace

absl::StatusOr<nlohmann::json> MeasureCublasPrefill(const engine::ResolvedConfig& c, int tokens, int repeats) {
  if (tokens < 1 || repeats < 1) {
    return absl::InvalidArgumentError(absl::StrCat("cuBLAS prefill: tokens ", tokens, " and repeats ", repeats,
                                                   " must be positive"));
  }
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim, kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<LinearShape> shapes = {{q_dim, H, 1}, {kv_dim, H, 2}, {H, q_dim, 1}, {I, H, 2}, {H, I, 1}};
  int64_t max_w = 0, max_in = 0, max_out = 0;
  for (const LinearShape& s : shapes) {
    max_w = std::max(max_w, s.out * s.in);
    max_in = std::max(max_in, s.in);
    max_out = std::max(max_out, s.out);
  }

  void* w = nullptr;
  void* x = nullptr;
  void* y = nullptr;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  absl::Cleanup release = [&] {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
  };
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&w, static_cast<size_t>(max_w) * 2));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&x, static_cast<size_t>(tokens) * max_in * 2));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&y, static_cast<size_t>(tokens) * max_out * 4));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  // 0x2C2C is fp16 ~0.066: finite products, and the values do not change the time.
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w, 0x2C, static_cast<size_t>(max_w) * 2, stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x, 0x2C, static_cast<size_t>(tokens) * max_in * 2, stream));
  BITLOOM_RETURN_IF_ERROR(Cublas(cublasCreate(&cublas), "cublasCreate"));
  BITLOOM_RETURN_IF_ERROR(Cublas(cublasSetStream(cublas, stream), "cublasSetStream"));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));

  nlohmann::json rows = nlohmann::json::array();
  double layer_seconds = 0;
  for (const LinearShape& s : shapes) {
    std::vector<double> times;
    for (int i = 0; i < 1 + repeats; ++i) {
      const float alpha = 1.0f, beta = 0.0f;
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
      // Row-major y [tokens, out] = x [tokens, in] · w [out, in]ᵀ, as the engine's GEMMs.
      BITLOOM_RETURN_IF_ERROR(Cublas(
          cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.out), tokens, static_cast<int>(s.in),
                       &alpha, w, CUDA_R_16F, static_cast<int>(s.in), x, CUDA_R_16F, static_cast<int>(s.in), &beta,
                       y, CUDA_R_32F, static_cast<int>(s.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx"));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
      float ms = 0;
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
      if (i >= 1) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const double ms = times[times.size() / 2];
    layer_seconds += s.per_layer * ms * 1e-3;
    rows.push_back({{"out", s.out}, {"in", s.in}, {"per_layer", s.per_layer}, {"ms", ms}});
  }
  const double seconds = layer_seconds * c.num_layers;
  double flops = 0;
  for (const LinearShape& s : shapes) flops += 2.0 * s.out * s.in * tokens * s.per_layer;
  flops *= c.num_layers;
  nlohmann::json j;
  j["tokens"] = tokens;
  j["seconds"] = seconds;
  j["tokens_per_s"] = seconds > 0 ? tokens / seconds : 0.0;
  j["tflops"] = seconds > 0 ? flops / seconds / 1e12 : 0.0;
  j["shapes"] = std::move(rows);
  return j;
}

}  // namespace bitloom::tools
