// CODEC_HADAMARD_SCALAR -> fp16 expansion of a row slice (see scalar_codec_dequant.h).
//
// Layout: grid (ceil(blocks_per_row / 256), min(row_count, 65535)); one thread per code block (32
// columns) of a row, blockIdx.y striding over the slice's rows. Consecutive threads read
// consecutive code blocks (K words each) and write consecutive 64-byte runs of the output (four
// 16-byte stores). K is a template parameter: every code's word index and shift are compile-time
// constants, as in the GEMV. The group's scale is read once per code block (a group is a whole
// number of blocks); the thread's group index is one 32-bit divide, hoisted out of the row loop.
// Memory-bound: the writes are 16/K times the reads. A tiled weight (scalar_codec_tiled.h) is read
// by its own kernel: the same thread per code block, whose 32 codes are K words of the tile layout
// with the codes at their tiled positions (tiled_layout.cuh). (A flat grid-stride loop over row·block with
// two 64-bit divides per code block ran at half the copy bandwidth on the H100.)

#include <cuda_fp16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/scalar_codec_dequant.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "device_util.cuh"
#include "tiled_layout.cuh"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridRows = 65535;  // grid.y limit; more rows loop

struct DequantArgs {
  const uint32_t* codes;
  const uint16_t* scales;
  int64_t row_stride_words;
  int blocks_per_row;
  int blocks_per_group;  // group_size / 32
  int64_t groups_per_row;
  int64_t row_begin;
  int64_t row_count;
  uint4* out;  // 8 halves per uint4
  int64_t out_stride_vec;
};

// The K words that hold code block `blk` of `row`: in the artifact layout the row's words
// blk·K.., in the tiled one (scalar_codec_tiled.h) words half·K .. half·K + K − 1 of lane
// 4·(row % 8) + blk % 4 in group blk / 4 of the row's 16-row tile (TiledGroupWord), half = row % 16 / 8.
template <int K, bool kTiled>
__device__ __forceinline__ void LoadBlockWords(const DequantArgs& a, int64_t row, int blk, uint32_t (&words)[K]) {
  if constexpr (kTiled) {
    const int in_tile = static_cast<int>(row % kTiledTileRows);
    const int lane = (in_tile % 8) * 4 + blk % 4;
    const uint32_t* group =
        a.codes + row / kTiledTileRows * kTiledTileRows * a.row_stride_words + blk / 4 * (2 * K * 32);
#pragma unroll
    for (int w = 0; w < K; ++w) words[w] = __ldg(group + detail::TiledGroupWord(K, lane, in_tile / 8 * K + w));
  } else {
    const uint32_t* src = a.codes + row * a.row_stride_words + blk * K;
#pragma unroll
    for (int w = 0; w < K; ++w) words[w] = __ldg(src + w);
  }
}

// Code i (0..31) of a block from its K words.
template <int K, bool kTiled>
__device__ __forceinline__ uint32_t BlockCode(const uint32_t (&words)[K], int i) {
  if constexpr (kTiled && K == 3) {
    uint32_t code = 0;  // the last pair's codes are spread over the three words
#pragma unroll
    for (int b = 0; b < K; ++b) {
      const int at = detail::TiledCodeBit(K, i, b);
      code |= ((words[at / 32] >> (at % 32)) & 1u) << b;
    }
    return code;
  } else if constexpr (kTiled) {
    constexpr int kPerWord = 32 / K;
    return (words[i / kPerWord] >> detail::TiledFieldBit(K, i % kPerWord)) & ((1u << K) - 1u);
  } else {
    return ScalarCodeAt(words, K, i);
  }
}

template <int K, bool kTiled>
__global__ void __launch_bounds__(kThreads) ScalarCodecDequantKernel(const DequantArgs a) {
  constexpr float kCenter = ScalarGridCenter(K);
  const int blk = static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
  if (blk >= a.blocks_per_row) return;
  const int group = blk / a.blocks_per_group;
  for (int64_t local_row = blockIdx.y; local_row < a.row_count; local_row += gridDim.y) {
    const int64_t row = a.row_begin + local_row;
    uint32_t words[K];
    LoadBlockWords<K, kTiled>(a, row, blk, words);
    const float scale = __half2float(__ushort_as_half(__ldg(a.scales + row * a.groups_per_row + group)));
    uint32_t packed[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float lo = (static_cast<float>(BlockCode<K, kTiled>(words, 2 * j)) - kCenter) * scale;
      const float hi = (static_cast<float>(BlockCode<K, kTiled>(words, 2 * j + 1)) - kCenter) * scale;
      packed[j] = detail::Half2AsU32(__floats2half2_rn(lo, hi));
    }
    uint4* dst = a.out + local_row * a.out_stride_vec + blk * 4;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      dst[v] = make_uint4(packed[4 * v], packed[4 * v + 1], packed[4 * v + 2], packed[4 * v + 3]);
    }
  }
}

absl::Status Validate(const ScalarCodecDequantParams& p) {
  auto bad = [](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchScalarCodecDequant: ", parts...));
  };
  const ScalarCodecGemvParams& w = p.weight;
  if (w.bits < kScalarMinBits || w.bits > kScalarMaxBits) return bad("weight.bits ", w.bits, " not 1..8");
  if (w.rows < 1 || w.cols < 1) return bad("weight shape [", w.rows, ", ", w.cols, "] must be positive");
  if (w.group_size < 32 || w.group_size % 32 != 0)
    return bad("weight.group_size ", w.group_size, " must be a positive multiple of 32");
  if (w.blocks_per_row != (w.cols + 31) / 32 || w.groups_per_row != (w.cols + w.group_size - 1) / w.group_size ||
      w.row_stride_words < w.blocks_per_row * w.bits) {
    return bad("weight layout fields do not match [", w.rows, ", ", w.cols, "] at ", w.bits,
               " bits (use MakeGemvParams)");
  }
  if (w.tiled && !TiledLayoutApplies(w)) return bad("weight.tiled set but the weight has no tiled layout");
  if (w.codes == nullptr || w.scales == nullptr || p.out == nullptr)
    return bad("weight.codes, weight.scales and out must be non-null");
  if (p.row_begin < 0 || p.row_count < 1 || p.row_begin + p.row_count > w.rows)
    return bad("rows [", p.row_begin, ", ", p.row_begin + p.row_count, ") not inside [0, ", w.rows, ")");
  if (p.out_stride < w.blocks_per_row * 32 || p.out_stride % 8 != 0)
    return bad("out_stride ", p.out_stride, " must be >= ", w.blocks_per_row * 32, " and a multiple of 8");
  if (reinterpret_cast<uintptr_t>(p.out) % 16 != 0 || reinterpret_cast<uintptr_t>(w.codes) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(w.scales) % 2 != 0)
    return bad("out must be 16-byte aligned, codes 4-byte, scales 2-byte");
  return absl::OkStatus();
}

template <int K, bool kTiled = false>
absl::Status Launch(const ScalarCodecDequantParams& p, cudaStream_t stream) {
  const ScalarCodecGemvParams& w = p.weight;
  const DequantArgs a{w.codes,
                      w.scales,
                      w.row_stride_words,
                      static_cast<int>(w.blocks_per_row),
                      w.group_size / 32,
                      w.groups_per_row,
                      p.row_begin,
                      p.row_count,
                      reinterpret_cast<uint4*>(p.out),
                      p.out_stride / 8};
  const dim3 grid(static_cast<unsigned>((a.blocks_per_row + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(p.row_count, kMaxGridRows)));
  ScalarCodecDequantKernel<K, kTiled><<<grid, kThreads, 0, stream>>>(a);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchScalarCodecDequant(const ScalarCodecDequantParams& params, cudaStream_t stream) {
  if (absl::Status s = Validate(params); !s.ok()) return s;
  if (params.weight.tiled) {
    switch (params.weight.bits) {
      case 2: return Launch<2, true>(params, stream);
      case 3: return Launch<3, true>(params, stream);
      case 4: return Launch<4, true>(params, stream);
      default: return Launch<8, true>(params, stream);
    }
  }
  switch (params.weight.bits) {
    case 1: return Launch<1>(params, stream);
    case 2: return Launch<2>(params, stream);
    case 3: return Launch<3>(params, stream);
    case 4: return Launch<4>(params, stream);
    case 5: return Launch<5>(params, stream);
    case 6: return Launch<6>(params, stream);
    case 7: return Launch<7>(params, stream);
    default: return Launch<8>(params, stream);
  }
}

}  // namespace bitloom::kernels::cuda
