// Where the tiled layout (scalar_codec_tiled.h; docs/KERNELS.md "Tiled layout") puts a lane's words
// within a 128-column group of a tile, and a code among a lane's K words of one row: shared by the
// rewrite, the GEMV and the prefill expansion.
#pragma once

namespace bitloom::kernels::cuda::detail {

// Words of one vector load of the GEMV: 4 (uint4) for even K, 2 (uint2) at K = 3, whose lane holds
// 6 words.
__host__ __device__ constexpr int TiledVectorWords(int bits) { return bits % 2 == 0 ? 4 : 2; }

// Word w (0..2K−1: row g's K words, then row g+8's) of lane `lane`, as an offset in words from the
// start of its tile's 128-column group. A lane's words are cut into vectors of TiledVectorWords, and
// a group stores vector 0 of lanes 0..31, then vector 1 of lanes 0..31, ...: one vector load of a
// warp reads 32 consecutive vectors, every 32-byte sector it touches whole. (Lane-major order,
// each lane's 2K words together, had every load touch twice (K = 4) to four times (K = 8) the
// sectors it used.)
__host__ __device__ constexpr int TiledGroupWord(int bits, int lane, int w) {
  const int v = TiledVectorWords(bits);
  return (w / v * 32 + lane) * v + w % v;
}

// K = 2, 4, 8: bit position, in a tiled word, of the code of local column l = 4c + r of the word
// (class c, r = 0..3): K·c + (0, 16, 8, 24)[r]. The artifact's word has it at K·l.
__host__ __device__ constexpr int TiledFieldBit(int bits, int l) {
  return bits * (l / 4) + (l % 4 == 0 ? 0 : l % 4 == 1 ? 16 : l % 4 == 2 ? 8 : 24);
}

// Position, among the K words of 32 codes (bit 32·i + p = bit p of word i), of bit b of the code of
// local column l = 0..31. K = 2, 4, 8: word l / (32/K) at TiledFieldBit. K = 3, pair j = l / 2
// (columns 2j and 2j+1 in the low and high half of a word, at the same place), in slots of three bits
// at 3m of a half: pairs 4i, 4i + 1, 4i + 2, 4i + 3 (i < 3) in slots 0, 3, 1, 4 of word i, pairs 12,
// 13, 14 in slot 2 of words 0, 1, 2, and pair 15's three bits on bit 15 of the halves of words 0, 1,
// 2 (the one bit each half has left). Each mma of the GEMV then reads two adjacent activation pairs.
__host__ __device__ constexpr int TiledCodeBit(int bits, int l, int b) {
  if (bits == 3) {
    const int j = l / 2, half = 16 * (l % 2);
    if (j < 12) return 32 * (j / 4) + half + 3 * (j % 4 == 0 ? 0 : j % 4 == 1 ? 3 : j % 4 == 2 ? 1 : 4) + b;
    return j < 15 ? 32 * (j - 12) + half + 6 + b : 32 * b + half + 15;
  }
  const int per_word = 32 / bits;
  return 32 * (l / per_word) + TiledFieldBit(bits, l % per_word) + b;
}

// The offset term of the tiled GEMV's decode (scalar_codec_tiled.cu): a group's codes enter the mma
// as 1024 + q·2^(K·c), so its sum over the 128 columns of one activation row x is taken back as
//   Σ_c (1024·2^(−K·c) + centre)·X_c = 1024·Σ w_K(u)·S_u + centre·Σ S_u,
// S_u the sum of x over the group's columns 32t + 4u .. 32t + 4u + 3 (quad u = 0..7 of every lane's
// 32 columns) and w_K(u) = 2^(−K·c) of that quad's class c: K = 2, 4, 8: c = u mod (8/K); K = 3:
// quads 0, 2, 4 class 0, 1, 3, 5 class 1, 6, 7 class 2 (TiledCodeBit's pairs).
__host__ __device__ constexpr float QuadClassWeight(int bits, int u) {
  const int c = bits == 3 ? (u >= 6 ? 2 : u & 1) : u % (8 / bits);
  return 1.0f / static_cast<float>(1u << (bits * c));
}

// The K whose offset terms a rotation writes for the tiled GEMV (HadamardRotateParams::offset_terms),
// in their order there: one value per 128-column group, batch row and K.
inline constexpr int kOffsetTermBits[] = {2, 3};

}  // namespace bitloom::kernels::cuda::detail
