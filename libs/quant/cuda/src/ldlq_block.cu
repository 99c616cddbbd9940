// LDLQ column-block kernel and the device codec packer (ldlq_block.h).
//
// LdlqBlockKernel layout. One warp owns one row of the weight stack; a CTA is kWarps = 16 warps
// (16 consecutive rows, possibly of different code widths: the slab index only selects K). The
// launch covers one LDLQ block of columns [b0, b1) (bw = b1 − b0 ≤ block):
//
//   shared: U tile  [bw][bw] fp32  U[b0+a][b0+b], loaded once per CTA (bw ≤ 128: 64 KB), read by
//                                   all 16 rows; for bw > 128 U is read from global/L2 instead
//           per warp v[block] fp32  the row's weights in the block, updated in place by feedback
//                    q[block] u8    the codes, written back coalesced at the end
//
// Per column i (all lanes compute the column's code redundantly from v[i], a broadcast read, so
// no shuffle is needed): code, e = (v[i] − value)/U[i][i], then lanes stride over j > i doing
// v[j] −= e·U[i][j]; __syncwarp orders the columns. At a group's first column the warp chooses the
// scale (ChooseScaleWarp): amax by shuffle, then lane k evaluates clipping candidate k's squared
// error *sequentially in column order*, exactly the CPU's summation, and the refinements run on
// lanes 0/1, so the scale equals the CPU's bit for bit given the same v.
//
// Arithmetic: every fp32/fp64 operation that has a CPU counterpart uses the _rn intrinsics, which
// nvcc never contracts into FMAs, in the CPU's order (scalar_quantizer.cc's Grid::Code, Value,
// GroupError, ChooseScale and the feedback line); the CPU build targets baseline x86-64, which has
// no FMA. Given equal inputs a row's codes, scales and in-block feedback are then identical to the
// CPU's; the only differences come from the lazy update (cuBLAS SGEMM sums the rank-128 product in
// its own order) and from U's last bit (cuSOLVER's fp64 Cholesky vs the CPU's), which can flip a
// code that sits within an ulp of a rounding tie.
//
// The loss terms e² and (Hd − H)_ii·Δ_i² are accumulated per lane in column order, reduced by a
// fixed shuffle tree and added to per-row fp64 totals: deterministic run to run.
#include <cuda_fp16.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/scalar_codec.h"
#include "ldlq_block.h"

namespace bitloom::quant::cuda::internal {
namespace {

constexpr int kWarps = 16;
constexpr int kThreads = kWarps * 32;
constexpr int kTileInSharedMax = 128;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ uint16_t F32ToF16Bits(float f) {
  return __half_as_ushort(__float2half_rn(f));
}

// scalar_quantizer.cc's Grid, with the same operation order and no contraction.
struct DeviceGrid {
  float scale = 0.0f, inv = 0.0f, center = 0.0f, qmax = 0.0f;

  static __device__ DeviceGrid Make(uint16_t scale_f16, int bits) {
    DeviceGrid g;
    g.scale = __half2float(__ushort_as_half(scale_f16));
    g.inv = g.scale > 0.0f ? __fdiv_rn(1.0f, g.scale) : 0.0f;
    g.center = kernels::ScalarGridCenter(bits);
    g.qmax = static_cast<float>((1 << bits) - 1);
    return g;
  }

  __device__ __forceinline__ uint8_t Code(float v) const {
    const float x = floorf(__fadd_rn(__fadd_rn(__fmul_rn(v, inv), center), 0.5f));
    return static_cast<uint8_t>(fminf(fmaxf(x, 0.0f), qmax));
  }
  __device__ __forceinline__ float Value(uint8_t q) const {
    return __fmul_rn(scale, __fsub_rn(static_cast<float>(q), center));
  }
};

// Σ (v − Q(v))² in fp64, in index order (GroupError).
__device__ double GroupErrorSeq(const float* v, int n, uint16_t scale, int bits) {
  const DeviceGrid g = DeviceGrid::Make(scale, bits);
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    const double d = __dsub_rn(static_cast<double>(v[i]), static_cast<double>(g.Value(g.Code(v[i]))));
    err = __dadd_rn(err, __dmul_rn(d, d));
  }
  return err;
}

// ChooseScale for the group v[0, n) in shared memory; every lane returns the same scale.
__device__ uint16_t ChooseScaleWarp(const float* v, int n, int bits, int clip_steps,
                                    double min_clip, int lane) {
  float amax = 0.0f;
  for (int i = lane; i < n; i += 32) amax = fmaxf(amax, fabsf(v[i]));
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, off));
  if (!(amax > 0.0f) || isinf(amax)) return F32ToF16Bits(0.0f);
  const float center = kernels::ScalarGridCenter(bits);
  const int steps = clip_steps > 1 ? clip_steps : 1;

  uint16_t best = 0;
  double best_err = 0.0;
  for (int base = 0; base < steps; base += 32) {
    const int k = base + lane;
    uint16_t s = 0;
    double err = 0.0;
    if (k < steps) {
      if (k == 0) {
        s = F32ToF16Bits(__fdiv_rn(amax, center));
      } else {
        const double alpha = __dsub_rn(
            1.0, __ddiv_rn(__dmul_rn(__dsub_rn(1.0, min_clip), static_cast<double>(k)),
                           static_cast<double>(steps - 1)));
        s = F32ToF16Bits(__double2float_rn(
            __ddiv_rn(__dmul_rn(alpha, static_cast<double>(amax)), static_cast<double>(center))));
      }
      err = GroupErrorSeq(v, n, s, bits);
    }
    // The CPU's scan: candidate 0 first, then strictly better ones in order.
    for (int t = 0; t < 32 && base + t < steps; ++t) {
      const double et = __shfl_sync(kFull, err, t);
      const uint16_t st = static_cast<uint16_t>(__shfl_sync(kFull, static_cast<int>(s), t));
      if (base + t == 0 || et < best_err) {
        best_err = et;
        best = st;
      }
    }
  }

  for (int iter = 0; iter < 2; ++iter) {
    // Σ v·l on lane 0 and Σ l² on lane 1, each in index order.
    const DeviceGrid g = DeviceGrid::Make(best, bits);
    double acc = 0.0;
    if (lane < 2) {
      for (int i = 0; i < n; ++i) {
        const double l = __dsub_rn(static_cast<double>(g.Code(v[i])), static_cast<double>(center));
        acc = __dadd_rn(acc, lane == 0 ? __dmul_rn(static_cast<double>(v[i]), l) : __dmul_rn(l, l));
      }
    }
    const double num = __shfl_sync(kFull, acc, 0);
    const double den = __shfl_sync(kFull, acc, 1);
    if (!(den > 0.0) || !(num > 0.0)) break;
    const uint16_t s = F32ToF16Bits(__double2float_rn(__ddiv_rn(num, den)));
    double err = 0.0;
    if (lane == 0) err = GroupErrorSeq(v, n, s, bits);
    err = __shfl_sync(kFull, err, 0);
    if (!(err < best_err)) break;
    best_err = err;
    best = s;
  }
  return best;
}

__global__ void __launch_bounds__(kThreads, 2) LdlqBlockKernel(LdlqBlockParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int bw = static_cast<int>(p.b1 - p.b0);
  const int block = static_cast<int>(p.block);
  const bool tile_shared = bw <= kTileInSharedMax;
  float* tile = reinterpret_cast<float*>(smem);
  float* v_all = tile + (tile_shared ? bw * bw : 0);
  uint8_t* q_all = reinterpret_cast<uint8_t*>(v_all + kWarps * block);

  if (tile_shared) {
    for (int k = threadIdx.x; k < bw * bw; k += kThreads) {
      const int a = k / bw, b = k - a * bw;
      tile[k] = p.u[(p.b0 + a) * p.cols + p.b0 + b];
    }
    __syncthreads();
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = blockIdx.x * int64_t{kWarps} + warp;
  if (r >= p.total_rows) return;
  const int bits = p.bits[r / p.rows];
  const float* ut = tile_shared ? tile : p.u + p.b0 * p.cols + p.b0;
  const int64_t ldu = tile_shared ? bw : p.cols;
  float* v = v_all + warp * block;
  uint8_t* q = q_all + warp * block;

  const float* wr = p.w + r * p.cols + p.b0;
  for (int j = lane; j < bw; j += 32) v[j] = wr[j];
  __syncwarp();
  const float* w0 = p.w_orig + (r % p.rows) * p.cols + p.b0;
  float* er = p.err + r * p.block;

  double e2 = 0.0, dsq = 0.0;
  DeviceGrid g;
  for (int li = 0; li < bw; ++li) {
    const int64_t i = p.b0 + li;
    if (i % p.group_size == 0) {
      const int n = static_cast<int>(p.cols - i < p.group_size ? p.cols - i : p.group_size);
      const uint16_t s = ChooseScaleWarp(v + li, n, bits, p.clip_steps, p.min_clip, lane);
      if (lane == 0) p.scales[r * p.groups_per_row + i / p.group_size] = s;
      g = DeviceGrid::Make(s, bits);
    }
    const float x = v[li];
    const uint8_t code = g.Code(x);
    const float val = g.Value(code);
    const float e = __fdiv_rn(__fsub_rn(x, val), ut[li * ldu + li]);
    if (lane == (li & 31)) {
      q[li] = code;
      er[li] = e;
      e2 = __dadd_rn(e2, __dmul_rn(static_cast<double>(e), static_cast<double>(e)));
      if (p.damp_diag != nullptr) {
        const double d = __dsub_rn(static_cast<double>(w0[li]), static_cast<double>(val));
        dsq = __dadd_rn(dsq, __dmul_rn(p.damp_diag[i], __dmul_rn(d, d)));
      }
    }
    const float* ui = ut + li * ldu;
    for (int j = li + 1 + lane; j < bw; j += 32) v[j] = __fsub_rn(v[j], __fmul_rn(e, ui[j]));
    __syncwarp();
  }
  uint8_t* codes = p.codes + r * p.cols + p.b0;
  for (int j = lane; j < bw; j += 32) codes[j] = q[j];
  for (int off = 16; off > 0; off /= 2) {
    e2 += __shfl_xor_sync(kFull, e2, off);
    dsq += __shfl_xor_sync(kFull, dsq, off);
  }
  if (lane == 0) {
    p.err_sq[r] += e2;
    p.damp_sq[r] += dsq;
  }
}

// One thread per (row, 32-code block): gathers the block's codes and writes its K words; the
// blob was zeroed, so the row padding stays 0.
__global__ void PackKernel(PackParams p) {
  const int64_t total = p.rows * p.blocks_per_row;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = k / p.blocks_per_row, b = k - r * p.blocks_per_row;
    uint32_t words[kernels::kScalarMaxBits + 1] = {};
    const int64_t c0 = b * kernels::kScalarCodesPerBlock;
    const int n = static_cast<int>(p.cols - c0 < kernels::kScalarCodesPerBlock
                                       ? p.cols - c0
                                       : kernels::kScalarCodesPerBlock);
    const uint8_t* src = p.codes + r * p.cols + c0;
    for (int i = 0; i < n; ++i) {
      const uint32_t code = src[i];
      const int bit = i * p.bits;
      words[bit >> 5] |= code << (bit & 31);
      if ((bit & 31) + p.bits > 32) words[(bit >> 5) + 1] |= code >> (32 - (bit & 31));
    }
    uint32_t* dst = reinterpret_cast<uint32_t*>(p.blob) + r * p.row_stride_words + b * p.bits;
    for (int w = 0; w < p.bits; ++w) dst[w] = words[w];
  }
}

}  // namespace

absl::Status LaunchLdlqBlock(const LdlqBlockParams& p, cudaStream_t stream) {
  const int64_t bw = p.b1 - p.b0;
  if (p.rows <= 0 || p.total_rows <= 0 || p.total_rows % p.rows != 0 ||
      p.total_rows / p.rows > kMaxStackedWidths || p.cols <= 0 || p.group_size <= 0 ||
      p.block <= 0 || p.block > kMaxLdlqBlock || p.block % p.group_size != 0 || p.b0 < 0 ||
      p.b0 % p.block != 0 || bw <= 0 || bw > p.block || p.b1 > p.cols ||
      p.groups_per_row != (p.cols + p.group_size - 1) / p.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchLdlqBlock: inconsistent params (rows ", p.rows, ", total_rows ", p.total_rows,
        ", cols ", p.cols, ", group ", p.group_size, ", block ", p.block, ", columns [", p.b0,
        ", ", p.b1, "))"));
  }
  for (int64_t s = 0; s < p.total_rows / p.rows; ++s) {
    if (p.bits[s] < kernels::kScalarMinBits || p.bits[s] > kernels::kScalarMaxBits)
      return absl::InvalidArgumentError(absl::StrCat("LaunchLdlqBlock: bits ", p.bits[s]));
  }
  if (p.w == nullptr || p.w_orig == nullptr || p.u == nullptr || p.codes == nullptr ||
      p.scales == nullptr || p.err == nullptr || p.err_sq == nullptr || p.damp_sq == nullptr)
    return absl::InvalidArgumentError("LaunchLdlqBlock: null buffer");
  const size_t tile_bytes = bw <= kTileInSharedMax ? static_cast<size_t>(bw * bw) * 4 : 0;
  const size_t smem = tile_bytes + static_cast<size_t>(kWarps) * p.block * (4 + 1);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      LdlqBlockKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int64_t ctas = (p.total_rows + kWarps - 1) / kWarps;
  LdlqBlockKernel<<<static_cast<unsigned>(ctas), kThreads, smem, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchPackScalarCodec(const PackParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.cols <= 0 || p.bits < kernels::kScalarMinBits ||
      p.bits > kernels::kScalarMaxBits || p.blob == nullptr || p.codes == nullptr ||
      p.scales == nullptr || p.scales_offset + p.rows * p.groups_per_row * 2 != p.total_bytes)
    return absl::InvalidArgumentError("LaunchPackScalarCodec: inconsistent params");
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.blob, 0, static_cast<size_t>(p.total_bytes), stream));
  const int64_t total = p.rows * p.blocks_per_row;
  const int64_t ctas = (total + 255) / 256;
  PackKernel<<<static_cast<unsigned>(ctas < 65536 ? ctas : 65536), 256, 0, stream>>>(p);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p.blob + p.scales_offset, p.scales,
                                               static_cast<size_t>(p.rows * p.groups_per_row) * 2,
                                               cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

}  // namespace bitloom::quant::cuda::internal
