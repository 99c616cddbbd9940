// The decode GEMV of CODEC_HADAMARD_SCALAR on tensor cores (see scalar_codec_gemv.h).
//
// Why tensor cores for a GEMV: the kernel must decode K-bit codes as fast as HBM delivers them.
// At K = 2 an H100 streams ~1.2e13 weights/s, leaving ~2.5 issue slots per weight for everything.
// Decoding to fp32 and doing batch·1 FFMA per weight on the CUDA cores runs out of slots at batch
// 1 for K ≤ 3 and at every K for batch 8. mma.m16n8k16 does 16·16·8 multiply-adds per warp
// instruction, so the batch (n = 8 columns) costs nothing and only the decode remains: about two
// instructions per weight (scalar_codec_gemv.cuh), whatever the batch.
//
// Tiling. One thread block owns a tile of 16 rows (the mma's m) and W warps (1..8) that split the
// row's columns (split-K); the warps' partial sums meet in shared memory at the end. Within a
// warp, lane = 4·g + t:
//   - rows: g and g+8 of the tile (the A fragment's rows);
//   - columns: per iteration the warp takes a *super-chunk* of 512 columns = 4 chunks of 128, and
//     lane t owns chunk t of it for both its rows: K consecutive uint4 per row (a chunk is 4 code
//     blocks of K words = exactly K 16-byte loads, 16-byte aligned because rows are), so every
//     load is 128-bit and the 4 lanes of a row read 64·K contiguous bytes;
//   - batch: lane g supplies activation row g (the B fragment's column); lanes g ≥ batch supply 0
//     and load nothing.
// Each code block of a lane feeds 8 mma (16 pairs of codes, 2 pairs per row per mma); the mma's 16
// k-slots come from the 4 lanes' 4 different chunks, which is why the per-group scale is applied to
// A in fp16 rather than to the fp32 accumulator. Super-chunks go round-robin to the W warps.
//
// Constants. 16 rows: the mma's m. 128 columns per lane: one uint4 per bit of K (the layout's
// 16-byte rows make this the widest aligned load). W: enough warps in flight to cover HBM latency:
// the launcher aims at ~2048 warps on the device (16 per SM on H100, each with 2·K uint4 of codes
// in flight), fewer when a row has fewer super-chunks. 256 threads at most, so no register cap
// below 255.
//
// Memory: codes and scales are read once (the DRAM stream); activations are re-read by every
// 16-row tile but are small (batch·cols·2 bytes) and stay in L1/L2. Nothing else is written but y.

#include <cuda_fp16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "scalar_codec_gemv.cuh"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kTileRows = 16;        // mma m
constexpr int kChunkCols = 128;      // columns a lane owns per iteration (4 code blocks)
constexpr int kSuperChunkCols = 512; // 4 lanes × 128
constexpr int kMaxWarps = 8;
constexpr int kTargetWarps = 2048;   // in flight on the whole device

__device__ __forceinline__ int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

struct GemvArgs {
  int64_t rows;
  int64_t blocks_per_row;
  int64_t groups_per_row;
  int64_t row_stride_vec;  // uint4 per packed row
  int group_size;
  const uint4* codes;
  const uint16_t* scales;
  const uint4* x;  // fp16, as uint4 (8 halves)
  int64_t x_stride_vec;
  float* y;
  int64_t y_stride;
  int batch;
};

template <int K>
__global__ void __launch_bounds__(kMaxWarps * 32)
    ScalarCodecGemvKernel(const GemvArgs a) {
  using detail::StaticFor;
  __shared__ float partial[kMaxWarps][kTileRows][kGemvMaxBatch];

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int64_t tile_row = static_cast<int64_t>(blockIdx.x) * kTileRows;
  // Rows past the end compute on the last row's data and are never stored.
  const int64_t r0 = Min64(tile_row + g, a.rows - 1);
  const int64_t r1 = Min64(tile_row + g + 8, a.rows - 1);
  const uint4* codes0 = a.codes + r0 * a.row_stride_vec;
  const uint4* codes1 = a.codes + r1 * a.row_stride_vec;
  const uint16_t* scales0 = a.scales + r0 * a.groups_per_row;
  const uint16_t* scales1 = a.scales + r1 * a.groups_per_row;
  const bool has_x = g < a.batch;
  const uint4* xrow = a.x + (has_x ? g : 0) * a.x_stride_vec;
  const bool chunk_scale = a.group_size % kChunkCols == 0;  // one scale per lane-chunk
  const __half2 neg_center = __float2half2_rn(-ScalarGridCenter(K));

  const int64_t chunks = (a.blocks_per_row + 3) / 4;
  const int64_t super_chunks = (chunks + 3) / 4;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};

  for (int64_t sc = warp; sc < super_chunks; sc += warps) {
    const int64_t chunk = sc * 4 + t;
    const bool chunk_ok = chunk < chunks;
    // All of this lane's code loads first: 2·K independent 16-byte loads in flight.
    uint32_t w0[4 * K], w1[4 * K];
    StaticFor<K>([&](auto u_c) {
      constexpr int u = decltype(u_c)::value;
      const int64_t vec = chunk * K + u;
      const bool ok = chunk_ok && vec < a.row_stride_vec;
      const uint4 v0 = ok ? __ldg(codes0 + vec) : make_uint4(0, 0, 0, 0);
      const uint4 v1 = ok ? __ldg(codes1 + vec) : make_uint4(0, 0, 0, 0);
      w0[4 * u] = v0.x, w0[4 * u + 1] = v0.y, w0[4 * u + 2] = v0.z, w0[4 * u + 3] = v0.w;
      w1[4 * u] = v1.x, w1[4 * u + 1] = v1.y, w1[4 * u + 2] = v1.z, w1[4 * u + 3] = v1.w;
    });
    const int64_t last_group = a.groups_per_row - 1;
    __half2 s0 = __float2half2_rn(0.0f), s1 = s0;  // set per chunk or per block below
    if (chunk_scale) {
      const int64_t gi = Min64(chunk * kChunkCols / a.group_size, last_group);
      s0 = __half2half2(__ushort_as_half(__ldg(scales0 + gi)));
      s1 = __half2half2(__ushort_as_half(__ldg(scales1 + gi)));
    }
    // Activations of block 0; block bb+1's are loaded while bb is computed.
    uint32_t xa[16], xb[16];
    auto load_x = [&](uint32_t(&xw)[16], int bb) {
      const int64_t blk = chunk * 4 + bb;
      const bool ok = has_x && chunk_ok && blk < a.blocks_per_row;
      StaticFor<4>([&](auto v_c) {
        constexpr int v = decltype(v_c)::value;
        const uint4 q = ok ? __ldg(xrow + blk * 4 + v) : make_uint4(0, 0, 0, 0);
        xw[4 * v] = q.x, xw[4 * v + 1] = q.y, xw[4 * v + 2] = q.z, xw[4 * v + 3] = q.w;
      });
    };
    load_x(xa, 0);
    auto block = [&](auto bb_c, uint32_t(&xw)[16], uint32_t(&x_next)[16]) {
      constexpr int kBlock = decltype(bb_c)::value;
      if constexpr (kBlock + 1 < 4) load_x(x_next, kBlock + 1);
      if (!chunk_scale) {
        const int64_t gi = Min64((chunk * 4 + kBlock) * 32 / a.group_size, last_group);
        s0 = __half2half2(__ushort_as_half(__ldg(scales0 + gi)));
        s1 = __half2half2(__ushort_as_half(__ldg(scales1 + gi)));
      }
      const __half2 ncs0 = __hmul2(s0, neg_center);
      const __half2 ncs1 = __hmul2(s1, neg_center);
      StaticFor<8>([&](auto m_c) {
        constexpr int kM = decltype(m_c)::value;
        constexpr int kBase = kBlock * K;
        const uint32_t a0 = detail::DecodePair<K, 2 * kM, kBase>(w0, s0, ncs0);
        const uint32_t a1 = detail::DecodePair<K, 2 * kM, kBase>(w1, s1, ncs1);
        const uint32_t a2 = detail::DecodePair<K, 2 * kM + 1, kBase>(w0, s0, ncs0);
        const uint32_t a3 = detail::DecodePair<K, 2 * kM + 1, kBase>(w1, s1, ncs1);
        const uint32_t b0 = detail::ActivationPair<K, 2 * kM>(xw);
        const uint32_t b1 = detail::ActivationPair<K, 2 * kM + 1>(xw);
        detail::MmaM16N8K16(acc, a0, a1, a2, a3, b0, b1);
      });
    };
    StaticFor<4>([&](auto bb_c) {
      if constexpr (decltype(bb_c)::value % 2 == 0) {
        block(bb_c, xa, xb);
      } else {
        block(bb_c, xb, xa);
      }
    });
  }

  // d0,d1 = rows g, batch 2t..2t+1; d2,d3 = row g+8.
  partial[warp][g][2 * t] = acc[0];
  partial[warp][g][2 * t + 1] = acc[1];
  partial[warp][g + 8][2 * t] = acc[2];
  partial[warp][g + 8][2 * t + 1] = acc[3];
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * kGemvMaxBatch; i += blockDim.x) {
    const int row = i / kGemvMaxBatch;
    const int b = i % kGemvMaxBatch;
    if (b >= a.batch || tile_row + row >= a.rows) continue;
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += partial[w][row][b];
    a.y[b * a.y_stride + tile_row + row] = sum;
  }
}

absl::Status Validate(const ScalarCodecGemvParams& p) {
  auto bad = [](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecGemv: ", parts...));
  };
  if (p.bits < kScalarMinBits || p.bits > kScalarMaxBits) return bad("bits ", p.bits, " not 1..8");
  if (p.rows < 1 || p.cols < 1) return bad("shape [", p.rows, ", ", p.cols, "] must be positive");
  if (p.group_size < 32 || p.group_size % 32 != 0)
    return bad("group_size ", p.group_size, " must be a positive multiple of 32");
  if (p.blocks_per_row != (p.cols + 31) / 32 ||
      p.groups_per_row != (p.cols + p.group_size - 1) / p.group_size ||
      p.row_stride_words < p.blocks_per_row * p.bits || p.row_stride_words % 4 != 0) {
    return bad("layout fields do not match [", p.rows, ", ", p.cols, "] at ", p.bits,
               " bits (use MakeGemvParams)");
  }
  if (p.batch < 1 || p.batch > kGemvMaxBatch)
    return bad("batch ", p.batch, " outside [1, ", kGemvMaxBatch, "]");
  if (p.codes == nullptr || p.scales == nullptr || p.x == nullptr || p.y == nullptr)
    return bad("codes, scales, x and y must be non-null");
  if (reinterpret_cast<uintptr_t>(p.codes) % 16 != 0 || reinterpret_cast<uintptr_t>(p.x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(p.scales) % 2 != 0 || reinterpret_cast<uintptr_t>(p.y) % 4 != 0)
    return bad("codes and x must be 16-byte aligned, scales 2-byte, y 4-byte");
  if (p.x_stride < p.blocks_per_row * 32 || p.x_stride % 8 != 0)
    return bad("x_stride ", p.x_stride, " must be >= ", p.blocks_per_row * 32,
               " and a multiple of 8");
  if (p.y_stride < p.rows) return bad("y_stride ", p.y_stride, " must be >= rows ", p.rows);
  return absl::OkStatus();
}

}  // namespace

// Instantiated below for K = 1..8; LaunchScalarCodecGemv dispatches on params.bits.
template <int K>
absl::Status LaunchScalarCodecGemvBits(const ScalarCodecGemvParams& p, cudaStream_t stream) {
  const GemvArgs a{p.rows,
                   p.blocks_per_row,
                   p.groups_per_row,
                   p.row_stride_words / 4,
                   p.group_size,
                   reinterpret_cast<const uint4*>(p.codes),
                   p.scales,
                   reinterpret_cast<const uint4*>(p.x),
                   p.x_stride / 8,
                   p.y,
                   p.y_stride,
                   p.batch};
  const int64_t tiles = (p.rows + kTileRows - 1) / kTileRows;
  const int64_t super_chunks = (p.blocks_per_row * 32 + kSuperChunkCols - 1) / kSuperChunkCols;
  const int64_t want = (kTargetWarps + tiles - 1) / tiles;
  const int warps = static_cast<int>(std::clamp<int64_t>(std::min(want, super_chunks), 1, kMaxWarps));
  ScalarCodecGemvKernel<K><<<static_cast<unsigned>(tiles), warps * 32, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template absl::Status LaunchScalarCodecGemvBits<1>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<2>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<3>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<4>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<5>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<6>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<7>(const ScalarCodecGemvParams&, cudaStream_t);
template absl::Status LaunchScalarCodecGemvBits<8>(const ScalarCodecGemvParams&, cudaStream_t);

ScalarCodecGemvParams MakeGemvParams(const ScalarCodecLayout& layout, const void* device_blob) {
  ScalarCodecGemvParams p;
  p.rows = layout.rows;
  p.cols = layout.cols;
  p.bits = layout.bits;
  p.group_size = layout.group_size;
  p.blocks_per_row = layout.blocks_per_row;
  p.groups_per_row = layout.groups_per_row;
  p.row_stride_words = layout.row_stride_words;
  p.codes = static_cast<const uint32_t*>(device_blob);
  p.scales = device_blob == nullptr ? nullptr
                                    : reinterpret_cast<const uint16_t*>(
                                          static_cast<const uint8_t*>(device_blob) +
                                          layout.scales_offset);
  p.y_stride = layout.rows;
  p.x_stride = layout.blocks_per_row * 32;
  return p;
}

bool IsSupported(int sm, const ScalarCodecGemvParams& params) {
  return sm >= 80 && Validate(params).ok();
}

absl::Status LaunchScalarCodecGemv(const ScalarCodecGemvParams& params, cudaStream_t stream) {
  if (absl::Status s = Validate(params); !s.ok()) return s;
  switch (params.bits) {
    case 1: return LaunchScalarCodecGemvBits<1>(params, stream);
    case 2: return LaunchScalarCodecGemvBits<2>(params, stream);
    case 3: return LaunchScalarCodecGemvBits<3>(params, stream);
    case 4: return LaunchScalarCodecGemvBits<4>(params, stream);
    case 5: return LaunchScalarCodecGemvBits<5>(params, stream);
    case 6: return LaunchScalarCodecGemvBits<6>(params, stream);
    case 7: return LaunchScalarCodecGemvBits<7>(params, stream);
    default: return LaunchScalarCodecGemvBits<8>(params, stream);
  }
}

}  // namespace bitloom::kernels::cuda
