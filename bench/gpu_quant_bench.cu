// gpu_quant_bench: the conversion-time cost of quantd's GPU path at Llama-3-8B shapes, stage by
// stage, projected to the whole model. JSON on stdout, a short table on stderr.
//
//   gpu_quant_bench [--rows 128] [--tokens 2048] [--layers 2] [--final-bits 4] [--group 128]
//                   > quant.json
//
// Model: hidden 4096, 32 heads, 8 KV heads (k/v: 1024 rows), intermediate 14336, 32 layers;
// random weights (already "rotated"), random fp16 activations standing in for the calibration
// set: `rows` sequences of `tokens` tokens per layer (default 128 × 2048 = 262144 tokens).
//
// Stages timed per layer (host wall clock with the device synchronised at each stage boundary, so
// uploads, downloads and host work inside a stage count):
//   hessian        GpuHessianAccumulator::Add per sequence for the 4 input sites (attention input
//                  4096, o_proj input 4096, MLP input 4096, down_proj input 14336), then Mean() to
//                  the host (fp64)
//   rotate_cpu     RotateHessian of the 4 Hessians on the host (the CPU code the pipeline runs
//                  between accumulation and factorisation; all host threads)
//   factor         GpuLdlq::Factor of the 4 Hessians (upload, cuSOLVER Cholesky with the damping
//                  schedule, triangular inverse, U)
//   measure        GpuLdlq::MeasureDevice at K = 1..8 for the 7 tensors (losses only, no blobs),
//                  including each tensor's output energy
//   final          GpuLdlq::QuantizeDevice at --final-bits for the 7 tensors (blob packed on the
//                  device and copied to the host)
//   forward_estimate  NOT the engine's forward (inferd's kernels are being written): cuBLAS fp16
//                  GEMMs of the block's shapes (q, k, v, o, gate, up, down over every token, plus
//                  the attention score and value products per head, no softmax/norms/RoPE), for
//                  one pass; the pipeline runs the block forward twice (measurement pass and
//                  quantization pass), which the projection counts.
// One warm-up layer first (allocations, cuBLAS/cuSOLVER initialisation), then `layers` timed
// layers; the per-layer figure is the median, projected ×32.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/quant/cuda/gpu_hessian_accumulator.h"
#include "bitloom/quant/cuda/gpu_ldlq.h"
#include "bitloom/quant/hessian.h"
#include "gpu_bench_util.cuh"

namespace bitloom::quant::cuda {
namespace {

using bench::DeviceMemory;
using bench::Median;

constexpr int kLayers = 32;
constexpr int64_t kHidden = 4096;
constexpr int64_t kHeads = 32;
constexpr int64_t kHeadDim = 128;
constexpr int64_t kKv = 1024;  // 8 KV heads × 128
constexpr int64_t kInter = 14336;

struct Site {
  const char* name;
  int64_t dim;
};
const Site kSites[] = {{"attn_in", kHidden}, {"o_in", kHidden}, {"mlp_in", kHidden},
                       {"down_in", kInter}};

struct Tensor {
  const char* name;
  int64_t rows, cols;
  int site;
};
const Tensor kTensors[] = {{"q_proj", kHidden, kHidden, 0}, {"k_proj", kKv, kHidden, 0},
                           {"v_proj", kKv, kHidden, 0},     {"o_proj", kHidden, kHidden, 1},
                           {"gate_proj", kInter, kHidden, 2}, {"up_proj", kInter, kHidden, 2},
                           {"down_proj", kHidden, kInter, 3}};

__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9e3779b97f4a7c15ull + seed;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}
__device__ float Uniform(uint64_t i, uint32_t seed) {
  return (Hash(i, seed) >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}
__global__ void FillHalf(__half* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    p[i] = __float2half_rn(scale * Uniform(i, seed));
}
__global__ void FillFloat(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    p[i] = scale * Uniform(i, seed);
}

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    if (absl::Status s_ = (expr); !s_.ok()) {  \
      return s_;                               \
    }                                          \
  } while (false)

absl::Status Cublas(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusString(st)));
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Settings {
  int64_t rows = 128;     // calibration sequences per layer
  int64_t tokens = 2048;  // tokens per sequence
  int layers = 2;         // timed layers (after one warm-up layer)
  int final_bits = 4;
  int group = 128;
};

// One pass of the block's GEMMs over all sequences (the forward estimate).
absl::Status ForwardEstimate(cublasHandle_t h, const Settings& s, const DeviceMemory& x,
                             const DeviceMemory& y, const DeviceMemory& scores,
                             const std::vector<DeviceMemory*>& w16) {
  const float one = 1.0f, zero = 0.0f;
  const int t = static_cast<int>(s.tokens);
  for (int64_t seq = 0; seq < s.rows; ++seq) {
    for (size_t k = 0; k < std::size(kTensors); ++k) {
      const Tensor& tn = kTensors[k];
      // Y[t, out] = X[t, in]·Wᵀ: column-major Yc [out, t] = Wcᵀ [out, in] · Xc [in, t].
      RETURN_IF_ERROR(Cublas(
          cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(tn.rows), t,
                       static_cast<int>(tn.cols), &one, w16[k]->get(), CUDA_R_16F,
                       static_cast<int>(tn.cols), x.get(), CUDA_R_16F, static_cast<int>(tn.cols),
                       &zero, y.get(), CUDA_R_16F, static_cast<int>(tn.rows), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (linear)"));
    }
    // Attention per head (flops of GQA; K and V laid out like Q for simplicity): S_h = Q_h·K_hᵀ
    // [t, t], O_h = P_h·V_h [t, 128]. x stands in for Q, K and V, y for O.
    RETURN_IF_ERROR(Cublas(
        cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, t, t, static_cast<int>(kHeadDim),
                                   &one, x.get(), CUDA_R_16F, static_cast<int>(kHidden), kHeadDim,
                                   x.get(), CUDA_R_16F, static_cast<int>(kHidden), kHeadDim, &zero,
                                   scores.get(), CUDA_R_16F, t, int64_t{t} * t,
                                   static_cast<int>(kHeads), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx (scores)"));
    RETURN_IF_ERROR(Cublas(
        cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(kHeadDim), t, t,
                                   &one, x.get(), CUDA_R_16F, static_cast<int>(kHidden), kHeadDim,
                                   scores.get(), CUDA_R_16F, t, int64_t{t} * t, &zero, y.get(),
                                   CUDA_R_16F, static_cast<int>(kHidden), kHeadDim,
                                   static_cast<int>(kHeads), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx (values)"));
  }
  return absl::OkStatus();
}

absl::Status Run(const Settings& s) {
  cudaStream_t stream;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  ThreadPool pool(0);
  std::fprintf(stderr, "device %s (sm_%d%d, %d SMs); %ld sequences x %ld tokens per layer\n",
               prop.name, prop.major, prop.minor, prop.multiProcessorCount,
               static_cast<long>(s.rows), static_cast<long>(s.tokens));

  // Weights: fp32 for the quantizer (random, "rotated"), fp16 for the forward estimate.
  std::vector<std::unique_ptr<DeviceMemory>> w32, w16;
  std::vector<DeviceMemory*> w16_ptrs;
  for (size_t k = 0; k < std::size(kTensors); ++k) {
    const int64_t n = kTensors[k].rows * kTensors[k].cols;
    w32.push_back(std::make_unique<DeviceMemory>());
    w16.push_back(std::make_unique<DeviceMemory>());
    RETURN_IF_ERROR(w32.back()->Allocate(n * 4));
    RETURN_IF_ERROR(w16.back()->Allocate(n * 2));
    FillFloat<<<1024, 256, 0, stream>>>(w32.back()->get<float>(), n, 100 + k, 0.02f);
    FillHalf<<<1024, 256, 0, stream>>>(w16.back()->get<__half>(), n, 100 + k, 0.02f);
    w16_ptrs.push_back(w16.back().get());
  }
  // One sequence of activations per site (the forward would produce a new one per sequence; the
  // values do not change the cost).
  std::vector<std::unique_ptr<DeviceMemory>> acts;
  for (size_t i = 0; i < std::size(kSites); ++i) {
    const int64_t n = s.tokens * kSites[i].dim;
    acts.push_back(std::make_unique<DeviceMemory>());
    RETURN_IF_ERROR(acts.back()->Allocate(n * 2));
    FillHalf<<<1024, 256, 0, stream>>>(acts.back()->get<__half>(), n, 7 + i, 1.0f);
  }
  DeviceMemory fwd_x, fwd_y, scores;
  RETURN_IF_ERROR(fwd_x.Allocate(s.tokens * kInter * 2));
  RETURN_IF_ERROR(fwd_y.Allocate(s.tokens * kInter * 2));
  RETURN_IF_ERROR(scores.Allocate(kHeads * s.tokens * s.tokens * 2));
  FillHalf<<<1024, 256, 0, stream>>>(fwd_x.get<__half>(), s.tokens * kInter, 3, 1.0f);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));

  cublasHandle_t cublas;
  RETURN_IF_ERROR(Cublas(cublasCreate(&cublas), "cublasCreate"));
  cublasSetStream(cublas, stream);

  std::vector<std::unique_ptr<GpuHessianAccumulator>> accs;
  for (const Site& site : kSites) {
    auto acc = GpuHessianAccumulator::Create(site.dim);
    if (!acc.ok()) return acc.status();
    accs.push_back(std::move(*acc));
  }
  auto ldlq = GpuLdlq::Create(stream);
  if (!ldlq.ok()) return ldlq.status();
  std::vector<kernels::HadamardRotation> rotations;
  for (size_t i = 0; i < std::size(kSites); ++i) {
    auto rot = kernels::HadamardRotation::Create(kSites[i].dim, 1000 + i);
    if (!rot.ok()) return rot.status();
    rotations.push_back(std::move(*rot));
  }
  const std::vector<int> widths = {1, 2, 3, 4, 5, 6, 7, 8};
  ScalarQuantizerOptions qo;
  qo.group_size = s.group;
  qo.bits = s.final_bits;

  const char* kStages[] = {"hessian", "rotate_cpu", "factor", "measure", "final",
                           "forward_estimate"};
  std::map<std::string, std::vector<double>> stage_s;
  std::map<std::string, std::vector<double>> measure_tensor_s, final_tensor_s;
  std::map<std::string, std::vector<double>> losses;  // last layer's, per tensor, K = 1..8
  std::vector<double> factor_damp;

  for (int layer = 0; layer <= s.layers; ++layer) {
    const bool timed = layer > 0;
    // Hessians.
    double t0 = Now();
    std::vector<std::vector<double>> hs;
    for (size_t i = 0; i < std::size(kSites); ++i) {
      RETURN_IF_ERROR(accs[i]->Reset(stream));
      for (int64_t seq = 0; seq < s.rows; ++seq) {
        RETURN_IF_ERROR(accs[i]->Add(acts[i]->get(), ActivationDtype::kF16, s.tokens, 0, stream));
      }
      auto mean = accs[i]->Mean(stream);
      if (!mean.ok()) return mean.status();
      hs.push_back(std::move(*mean));
    }
    double t1 = Now();
    if (timed) stage_s["hessian"].push_back(t1 - t0);
    for (size_t i = 0; i < std::size(kSites); ++i)
      RETURN_IF_ERROR(RotateHessian(rotations[i], &hs[i], &pool));
    double t2 = Now();
    if (timed) stage_s["rotate_cpu"].push_back(t2 - t1);
    std::vector<GpuHessianFactor> factors;
    for (size_t i = 0; i < std::size(kSites); ++i) {
      auto f = (*ldlq)->Factor(hs[i], kSites[i].dim, {});
      if (!f.ok()) return f.status();
      if (timed && layer == s.layers) factor_damp.push_back(f->relative_damp());
      factors.push_back(std::move(*f));
    }
    double t3 = Now();
    if (timed) stage_s["factor"].push_back(t3 - t2);
    for (size_t k = 0; k < std::size(kTensors); ++k) {
      const Tensor& tn = kTensors[k];
      const double a = Now();
      auto m = (*ldlq)->MeasureDevice(w32[k]->get<float>(), tn.rows, tn.cols, factors[tn.site],
                                      widths, qo);
      if (!m.ok()) return m.status();
      if (timed) measure_tensor_s[tn.name].push_back(Now() - a);
      std::vector<double>& l = losses[tn.name];
      l.clear();
      for (const QuantizedWeight& q : *m) l.push_back(q.proxy_loss);
    }
    double t4 = Now();
    if (timed) stage_s["measure"].push_back(t4 - t3);
    for (size_t k = 0; k < std::size(kTensors); ++k) {
      const Tensor& tn = kTensors[k];
      const double a = Now();
      auto q = (*ldlq)->QuantizeDevice(w32[k]->get<float>(), tn.rows, tn.cols, factors[tn.site],
                                       qo);
      if (!q.ok()) return q.status();
      if (timed) final_tensor_s[tn.name].push_back(Now() - a);
    }
    double t5 = Now();
    if (timed) stage_s["final"].push_back(t5 - t4);
    RETURN_IF_ERROR(ForwardEstimate(cublas, s, fwd_x, fwd_y, scores, w16_ptrs));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    double t6 = Now();
    if (timed) stage_s["forward_estimate"].push_back(t6 - t5);
    std::fprintf(stderr, "layer %d%s: hessian %.3f s, rotate_cpu %.3f s, factor %.3f s, measure "
                 "%.3f s, final %.3f s, forward_estimate %.3f s\n",
                 layer, timed ? "" : " (warm-up)", t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4,
                 t6 - t5);
  }
  cublasDestroy(cublas);

  // Per-layer medians, the projection (forward counted twice: measurement and quantization
  // passes), shares.
  std::map<std::string, double> per_layer;
  double layer_total = 0.0;
  for (const char* st : kStages) {
    const double v = Median(stage_s[st]) * (std::strcmp(st, "forward_estimate") == 0 ? 2.0 : 1.0);
    per_layer[st] = v;
    layer_total += v;
  }
  std::fprintf(stderr, "%-18s %12s %14s %7s\n", "stage", "s/layer", "s/32 layers", "share");
  for (const char* st : kStages) {
    std::fprintf(stderr, "%-18s %12.3f %14.1f %6.1f%%\n", st, per_layer[st],
                 per_layer[st] * kLayers, 100.0 * per_layer[st] / layer_total);
  }
  std::fprintf(stderr, "%-18s %12.3f %14.1f\n", "total", layer_total, layer_total * kLayers);

  bench::PrintDeviceJson(prop, prop.major * 10 + prop.minor);
  std::printf(
      "  \"model\": {\"name\": \"llama3-8b-shaped (random weights)\", \"hidden\": %ld, "
      "\"heads\": %ld, \"kv_rows\": %ld, \"intermediate\": %ld, \"layers\": %d},\n",
      static_cast<long>(kHidden), static_cast<long>(kHeads), static_cast<long>(kKv),
      static_cast<long>(kInter), kLayers);
  std::printf(
      "  \"calibration\": {\"sequences\": %ld, \"tokens_per_sequence\": %ld, \"activations\": "
      "\"random fp16\"},\n",
      static_cast<long>(s.rows), static_cast<long>(s.tokens));
  std::printf("  \"quantizer\": {\"measure_bits\": [1,2,3,4,5,6,7,8], \"final_bits\": %d, "
              "\"group_size\": %d},\n",
              s.final_bits, s.group);
  std::printf(
      "  \"timing\": \"host wall clock per stage, device synchronised at stage boundaries; one "
      "warm-up layer then the median of %d layers; projection = per-layer x %d\",\n",
      s.layers, kLayers);
  std::printf(
      "  \"forward_estimate_note\": \"estimate, not the engine: cuBLAS fp16 GEMMs of the block "
      "(7 linear layers + per-head attention products, no softmax/norm/RoPE) over all tokens; "
      "per_layer_s counts 2 passes (measurement + quantization)\",\n");
  std::printf("  \"stages\": [\n");
  for (size_t i = 0; i < std::size(kStages); ++i) {
    const char* st = kStages[i];
    std::printf(
        "    {\"stage\": \"%s\", \"per_layer_s\": %.4f, \"projected_%d_layers_s\": %.2f, "
        "\"share\": %.4f%s}%s\n",
        st, per_layer[st], kLayers, per_layer[st] * kLayers, per_layer[st] / layer_total,
        std::strcmp(st, "forward_estimate") == 0 ? ", \"estimate\": true" : "",
        i + 1 < std::size(kStages) ? "," : "");
  }
  std::printf("  ],\n  \"per_layer_total_s\": %.4f,\n  \"projected_total_s\": %.2f,\n",
              layer_total, layer_total * kLayers);
  std::printf("  \"tensors\": [\n");
  for (size_t k = 0; k < std::size(kTensors); ++k) {
    const Tensor& tn = kTensors[k];
    std::string l;
    for (double v : losses[tn.name]) l += absl::StrCat(l.empty() ? "" : ",", v);
    std::printf(
        "    {\"name\": \"%s\", \"rows\": %ld, \"cols\": %ld, \"measure_s\": %.4f, "
        "\"final_s\": %.4f, \"proxy_loss_k1_to_k8\": [%s]}%s\n",
        tn.name, static_cast<long>(tn.rows), static_cast<long>(tn.cols),
        Median(measure_tensor_s[tn.name]), Median(final_tensor_s[tn.name]), l.c_str(),
        k + 1 < std::size(kTensors) ? "," : "");
  }
  std::string damp;
  for (double v : factor_damp) damp += absl::StrCat(damp.empty() ? "" : ",", v);
  std::printf("  ],\n  \"factor_relative_damp\": [%s]\n}\n", damp.c_str());
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitloom::quant::cuda

int main(int argc, char** argv) {
  bitloom::quant::cuda::Settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* flag = argv[i];
    const long v = std::atol(argv[i + 1]);
    if (std::strcmp(flag, "--rows") == 0) {
      s.rows = v;
    } else if (std::strcmp(flag, "--tokens") == 0) {
      s.tokens = v;
    } else if (std::strcmp(flag, "--layers") == 0) {
      s.layers = static_cast<int>(v);
    } else if (std::strcmp(flag, "--final-bits") == 0) {
      s.final_bits = static_cast<int>(v);
    } else if (std::strcmp(flag, "--group") == 0) {
      s.group = static_cast<int>(v);
    } else {
      std::fprintf(stderr, "gpu_quant_bench: unknown flag %s\n", flag);
      return 2;
    }
  }
  if (s.rows < 1 || s.tokens < 1 || s.layers < 1) {
    std::fprintf(stderr, "gpu_quant_bench: --rows, --tokens and --layers must be positive\n");
    return 2;
  }
  const absl::Status st = bitloom::quant::cuda::Run(s);
  if (!st.ok()) {
    std::fprintf(stderr, "gpu_quant_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
