// Randomized Hadamard rotation of a few activation rows (see hadamard_rotation.h).
//
// Layout: one thread block per row; the row lives in shared memory as fp32 [p][L] for the whole
// transform (n·4 bytes, plus p·p int8 for the base matrix), because every output depends on every
// input and a decode batch is at most a few rows: the work is a few microseconds of latency, not
// bandwidth, so the simplest exact schedule wins.
//   1. load x·D (signs from SplitMix64, regenerated per element: no sign table in memory);
//   2. log2(L) butterfly stages over the p segments, one __syncthreads per stage, each stage the
//      CPU's (a+b, a−b) on the same pairs, so fp32 results are bit-identical to Fwht();
//   3. each output (i, j) = Σ_k ±y[k][j] in the CPU's order k = 0..p−1, times norm, converted and
//      stored; the tail [n, out_stride) is zero-filled.
// kThreads = 1024 for wide rows: stage 2 has n/2 butterflies (14336 for n = 28672), so 14 per
// thread per stage; 256 for narrow rows, where more threads would only wait at the barriers.

#include <cuda_fp16.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "device_util.cuh"

namespace bitloom::kernels::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float LoadAsFloat(const T* p);
template <>
__device__ __forceinline__ float LoadAsFloat<float>(const float* p) {
  return *p;
}
template <>
__device__ __forceinline__ float LoadAsFloat<__half>(const __half* p) {
  return __half2float(*p);
}

template <typename T>
__device__ __forceinline__ void StoreFromFloat(T* p, float v);
template <>
__device__ __forceinline__ void StoreFromFloat<float>(float* p, float v) {
  *p = v;
}
template <>
__device__ __forceinline__ void StoreFromFloat<__half>(__half* p, float v) {
  *p = __float2half_rn(v);
}

struct RotateArgs {
  int64_t n, p, l;
  int log_l;  // log2(L)
  uint64_t seed;
  bool mix;  // p > 1 and B is a Hadamard matrix
  float norm;
  const int8_t* base;  // [p, p]
  const void* x;
  int64_t x_stride;
  void* out;
  int64_t out_stride;
};

template <typename Tin, typename Tout>
__global__ void HadamardRotateKernel(RotateArgs a) {
  extern __shared__ float row[];  // [n] fp32, then [p·p] int8 when mixing
  int8_t* base = reinterpret_cast<int8_t*>(row + a.n);
  const Tin* x = static_cast<const Tin*>(a.x) + blockIdx.x * a.x_stride;
  Tout* out = static_cast<Tout*>(a.out) + blockIdx.x * a.out_stride;
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;

  for (int64_t i = tid; i < a.n; i += nthreads) {
    const float v = LoadAsFloat(x + i);
    row[i] = (detail::SplitMix64At(a.seed, i) >> 63) ? -v : v;  // exact: the CPU multiplies by ±1
  }
  if (a.mix) {
    for (int64_t i = tid; i < a.p * a.p; i += nthreads) base[i] = a.base[i];
  }
  __syncthreads();

  // Butterfly k of a stage: segment k / (L/2), then within it pair (j, j+h) with j = blk·2h + off.
  // 32-bit indices and shifts (L and h are powers of two): 64-bit division is a long subroutine.
  const int n = static_cast<int>(a.n);
  const int log_half_l = a.log_l - 1;
  for (int log_h = 0; log_h < a.log_l; ++log_h) {
    const int h = 1 << log_h;
    for (int k = tid; k < n / 2; k += nthreads) {
      const int seg = k >> log_half_l;
      const int kk = k & ((1 << log_half_l) - 1);
      const int j = (seg << a.log_l) + ((kk >> log_h) << (log_h + 1)) + (kk & (h - 1));
      const float u = row[j];
      const float v = row[j + h];
      row[j] = u + v;
      row[j + h] = u - v;
    }
    __syncthreads();
  }

  const int p = static_cast<int>(a.p);
  for (int e = tid; e < n; e += nthreads) {
    float v;
    if (a.mix) {
      const int i = e >> a.log_l;
      const int j = e & ((1 << a.log_l) - 1);
      const int8_t* b = base + i * p;
      float acc = 0.0f;
      for (int k = 0; k < p; ++k) {
        const float y = row[(k << a.log_l) + j];
        acc = b[k] > 0 ? acc + y : acc - y;
      }
      v = acc;
    } else {
      v = row[e];
    }
    StoreFromFloat(out + e, v * a.norm);
  }
  for (int64_t e = a.n + tid; e < a.out_stride; e += nthreads) StoreFromFloat(out + e, 0.0f);
}

int64_t SharedBytes(const RotationDesc& r) {
  const bool mix = r.base_order > 1 && r.base_is_hadamard;
  return r.n * 4 + (mix ? r.base_order * r.base_order : 0);
}

int64_t MaxSharedBytes(int sm) {
  if (sm >= 90) return 232448;  // 227 KiB opt-in
  if (sm == 80 || sm == 87) return 166912;
  return 101376;  // sm_86, sm_89
}

absl::Status Validate(const HadamardRotateParams& p) {
  const RotationDesc& r = p.rotation;
  if (r.n < 1) return absl::InvalidArgumentError("LaunchHadamardRotate: rotation.n must be >= 1");
  if (r.base_order < 1 || r.pow2_order < 1 || r.base_order * r.pow2_order != r.n ||
      (r.pow2_order & (r.pow2_order - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: p=", r.base_order,
                                                   " x L=", r.pow2_order, " does not give n=", r.n,
                                                   " with L a power of two"));
  }
  if (r.base_order > 1 && r.base_is_hadamard && r.base == nullptr) {
    return absl::InvalidArgumentError("LaunchHadamardRotate: rotation.base is null but p > 1");
  }
  if (p.x == nullptr || p.out == nullptr)
    return absl::InvalidArgumentError("LaunchHadamardRotate: x and out must be non-null");
  if (p.x_stride < r.n || p.out_stride < r.n) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: x_stride ", p.x_stride,
                                                   " and out_stride ", p.out_stride,
                                                   " must be >= n = ", r.n));
  }
  if (r.n > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: n ", r.n, " too large"));
  }
  if (p.batch < 1 || p.batch > kMaxRotateBatch) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchHadamardRotate: batch ", p.batch,
                                                   " outside [1, ", kMaxRotateBatch, "]"));
  }
  return absl::OkStatus();
}

template <typename Tin, typename Tout>
absl::Status Launch(const HadamardRotateParams& p, cudaStream_t stream) {
  const RotationDesc& r = p.rotation;
  int log_l = 0;
  while ((int64_t{1} << log_l) < r.pow2_order) ++log_l;
  RotateArgs a{r.n,
               r.base_order,
               r.pow2_order,
               log_l,
               r.seed,
               r.base_order > 1 && r.base_is_hadamard,
               r.norm,
               r.base,
               p.x,
               p.x_stride,
               p.out,
               p.out_stride};
  const int64_t smem = SharedBytes(r);
  const int threads = r.n >= 4096 ? 1024 : 256;
  auto* kernel = &HadamardRotateKernel<Tin, Tout>;
  if (smem > 48 * 1024) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<p.batch, threads, smem, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

RotationDesc DescribeRotation(const HadamardRotation& rotation, const int8_t* device_base) {
  RotationDesc d;
  d.n = rotation.size();
  d.seed = rotation.seed();
  d.base_order = rotation.base_order();
  d.pow2_order = rotation.pow2_order();
  d.base_is_hadamard = rotation.base_is_hadamard();
  // The CPU keeps 1/√(p·L) in double and casts to fp32 at use: the same value.
  const double scale_of = static_cast<double>(d.base_is_hadamard ? d.base_order * d.pow2_order
                                                                 : d.pow2_order);
  d.norm = static_cast<float>(1.0 / std::sqrt(scale_of));
  d.base = device_base;
  return d;
}

bool IsSupported(int sm, const HadamardRotateParams& params) {
  return sm >= 80 && Validate(params).ok() && SharedBytes(params.rotation) <= MaxSharedBytes(sm);
}

absl::Status LaunchHadamardRotate(const HadamardRotateParams& params, cudaStream_t stream) {
  if (absl::Status s = Validate(params); !s.ok()) return s;
  const bool in16 = params.x_type == ActivationType::kF16;
  const bool out16 = params.out_type == ActivationType::kF16;
  if (in16 && out16) return Launch<__half, __half>(params, stream);
  if (in16) return Launch<__half, float>(params, stream);
  if (out16) return Launch<float, __half>(params, stream);
  return Launch<float, float>(params, stream);
}

}  // namespace bitloom::kernels::cuda
