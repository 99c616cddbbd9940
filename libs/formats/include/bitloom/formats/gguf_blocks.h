// GGML tensor types and the on-disk block structs of the quantized ones, as GGUF stores them.
//
// Each quantized type packs `kBlockSize` consecutive weights of one row into one fixed-size struct;
// a row is a whole number of blocks. Every struct is defined once here, shared by the CPU dequantizer
// (gguf_dequant.h) and any future GPU kernel, with a static_assert pinning its size to the file
// format: the layouts and the meaning of every field are specified in docs/GGUF.md. All multi-byte
// fields are little-endian; fp16 scales are kept as raw uint16_t bits (bitloom::F16ToF32 decodes them)
// so that the structs are trivially copyable and have no padding.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace bitloom::formats {

// ggml_type ids as they appear in a GGUF tensor table. Only the ids we know by name are listed;
// others are still parsed (and named "type<N>") but cannot be dequantized.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

// Weights per block of the legacy (non-K) quantizations.
inline constexpr int kQK4_0 = 32;
inline constexpr int kQK4_1 = 32;
inline constexpr int kQK5_0 = 32;
inline constexpr int kQK5_1 = 32;
inline constexpr int kQK8_0 = 32;
// Weights per super-block of the K-quantizations.
inline constexpr int kQK_K = 256;
// Bytes of packed 6-bit scales and mins in a Q4_K / Q5_K super-block (8 scales + 8 mins).
inline constexpr int kKScaleSize = 12;

// y = d * (q - 8), q in [0, 15].
struct BlockQ4_0 {
  uint16_t d;                // fp16 scale
  uint8_t qs[kQK4_0 / 2];    // weight j in the low nibble of qs[j], weight j+16 in the high nibble
};
static_assert(sizeof(BlockQ4_0) == 2 + kQK4_0 / 2, "wrong q4_0 block size");

// y = d * q + m, q in [0, 15].
struct BlockQ4_1 {
  uint16_t d;                // fp16 scale
  uint16_t m;                // fp16 minimum
  uint8_t qs[kQK4_1 / 2];    // nibbles as in Q4_0
};
static_assert(sizeof(BlockQ4_1) == 4 + kQK4_1 / 2, "wrong q4_1 block size");

// y = d * (q - 16), q in [0, 31]: low 4 bits as in Q4_0, fifth bit j of qh for weight j.
struct BlockQ5_0 {
  uint16_t d;                // fp16 scale
  uint8_t qh[4];             // 32 high bits, little-endian uint32 (bytes, so the struct stays packed)
  uint8_t qs[kQK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 2 + 4 + kQK5_0 / 2, "wrong q5_0 block size");

// y = d * q + m, q in [0, 31].
struct BlockQ5_1 {
  uint16_t d;                // fp16 scale
  uint16_t m;                // fp16 minimum
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 4 + 4 + kQK5_1 / 2, "wrong q5_1 block size");

// y = d * q, q a signed byte.
struct BlockQ8_0 {
  uint16_t d;                // fp16 scale
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 2 + kQK8_0, "wrong q8_0 block size");

// 16 sub-blocks of 16 weights, 2-bit q. y = d * sc_i * q - dmin * m_i,
// with sc_i = scales[i] & 0xF and m_i = scales[i] >> 4.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];     // weight 128h + 32s + l: bits 2s..2s+1 of qs[32h + l]
  uint16_t d;                // fp16 super-block scale of the sub-block scales
  uint16_t dmin;             // fp16 super-block scale of the sub-block mins
};
static_assert(sizeof(BlockQ2_K) == 2 * 2 + kQK_K / 16 + kQK_K / 4, "wrong q2_K block size");

// 16 sub-blocks of 16 weights, 3-bit q = low 2 bits (as in Q2_K) minus 4 when the hmask bit is 0.
// y = d * (sc_i - 32) * q with 6-bit sc_i packed in `scales` (docs/GGUF.md).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];  // weight v: bit v/32 of hmask[v % 32]
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;                // fp16
};
static_assert(sizeof(BlockQ3_K) == 2 + kQK_K / 4 + kQK_K / 8 + 12, "wrong q3_K block size");

// 8 sub-blocks of 32 weights, 4-bit q. y = d * sc_i * q - dmin * m_i with 6-bit sc_i, m_i.
struct BlockQ4_K {
  uint16_t d;                // fp16
  uint16_t dmin;             // fp16
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];     // weight 64c + l: low nibble of qs[32c + l]; 64c + 32 + l: high nibble
};
static_assert(sizeof(BlockQ4_K) == 2 * 2 + kKScaleSize + kQK_K / 2, "wrong q4_K block size");

// As Q4_K with a fifth bit per weight: weight 64c + l takes bit 2c of qh[l], 64c + 32 + l bit 2c+1.
struct BlockQ5_K {
  uint16_t d;                // fp16
  uint16_t dmin;             // fp16
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 2 * 2 + kKScaleSize + kQK_K / 8 + kQK_K / 2,
              "wrong q5_K block size");

// 16 sub-blocks of 16 weights, 6-bit q (4 low bits in ql, 2 high bits in qh). y = d * sc_i * (q - 32).
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;                // fp16
};
static_assert(sizeof(BlockQ6_K) == 2 + kQK_K / 16 + 3 * kQK_K / 4, "wrong q6_K block size");

// Block geometry of a type: `block_size` weights take `type_size` bytes.
struct GgmlTypeTraits {
  absl::string_view name;  // "Q4_K", "F32", ...; empty for an unknown id
  uint32_t block_size = 0;
  uint32_t type_size = 0;
  bool can_dequantize = false;  // this library decodes it to fp32
};

// Geometry of `type`; block_size 0 when the id is unknown (or known but of no fixed geometry to us).
GgmlTypeTraits GetGgmlTypeTraits(GgmlType type);

}  // namespace bitloom::formats
