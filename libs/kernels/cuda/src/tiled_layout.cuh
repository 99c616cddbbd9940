// Where the tiled layout (scalar_codec_tiled.h; docs/KERNELS.md "Tiled layout") puts a code inside a
// 32-bit word: shared by the rewrite, the GEMV and the prefill expansion.
#pragma once

namespace bitloom::kernels::cuda::detail {

// Bit position, in a tiled word of K-bit codes, of the code of local column l = 4c + r of the word
// (class c, r = 0..3): K·c + (0, 16, 8, 24)[r]. The artifact's word has it at K·l.
__host__ __device__ constexpr int TiledFieldBit(int bits, int l) {
  return bits * (l / 4) + (l % 4 == 0 ? 0 : l % 4 == 1 ? 16 : l % 4 == 2 ? 8 : 24);
}

}  // namespace bitloom::kernels::cuda::detail
