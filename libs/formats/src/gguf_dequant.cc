// Dequantizers for GGUF block types. Each decoder reads one block struct (gguf_blocks.h) by memcpy,
// since tensor data in a mapped file is only guaranteed to be aligned to the file's alignment, not to
// the struct, and writes its block's weights in order. The formulas and bit positions are specified
// in docs/GGUF.md. This file is compiled with -ffp-contract=off (see CMakeLists.txt): a fused
// multiply-add in `d * q + m` would round once instead of twice and break bit-exactness with the
// reference decoder.
#include "bitloom/formats/gguf_dequant.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"

namespace bitloom::formats {
namespace {

template <typename Block>
Block LoadBlock(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof(Block));
  return b;
}

uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

void DecodeQ4_0(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ4_0>(p);
  const float d = F16ToF32(b.d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 0x0F) - 8);
    y[j + kQK4_0 / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

void DecodeQ4_1(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ4_1>(p);
  const float d = F16ToF32(b.d);
  const float m = F16ToF32(b.m);
  for (int j = 0; j < kQK4_1 / 2; ++j) {
    y[j] = d * static_cast<float>(b.qs[j] & 0x0F) + m;
    y[j + kQK4_1 / 2] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
}

void DecodeQ5_0(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ5_0>(p);
  const float d = F16ToF32(b.d);
  const uint32_t qh = LoadU32(b.qh);
  for (int j = 0; j < kQK5_0 / 2; ++j) {
    const int lo = (b.qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + kQK5_0 / 2] = d * static_cast<float>(hi - 16);
  }
}

void DecodeQ5_1(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ5_1>(p);
  const float d = F16ToF32(b.d);
  const float m = F16ToF32(b.m);
  const uint32_t qh = LoadU32(b.qh);
  for (int j = 0; j < kQK5_1 / 2; ++j) {
    const int lo = (b.qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo) + m;
    y[j + kQK5_1 / 2] = d * static_cast<float>(hi) + m;
  }
}

void DecodeQ8_0(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ8_0>(p);
  const float d = F16ToF32(b.d);
  for (int j = 0; j < kQK8_0; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

void DecodeQ2_K(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ2_K>(p);
  const float d = F16ToF32(b.d);
  const float dmin = F16ToF32(b.dmin);
  for (int v = 0; v < kQK_K; ++v) {
    const int half = v / 128, shift = (v % 128) / 32, l = v % 32;
    const int q = (b.qs[32 * half + l] >> (2 * shift)) & 3;
    const uint8_t sc = b.scales[v / 16];
    const float dl = d * static_cast<float>(sc & 0x0F);
    const float ml = dmin * static_cast<float>(sc >> 4);
    y[v] = dl * static_cast<float>(q) - ml;
  }
}

// The 16 6-bit scales of a Q3_K block: low 4 bits in scales[0..7] (two per byte), high 2 bits in
// scales[8..11] (four per byte).
void UnpackQ3KScales(const uint8_t* s, int* out) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (s[i] & 0x0F) : (s[i - 8] >> 4);
    const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    out[i] = (low | (high << 4)) - 32;
  }
}

void DecodeQ3_K(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ3_K>(p);
  const float d = F16ToF32(b.d);
  int scales[16];
  UnpackQ3KScales(b.scales, scales);
  for (int v = 0; v < kQK_K; ++v) {
    const int half = v / 128, shift = (v % 128) / 32, l = v % 32;
    const int low = (b.qs[32 * half + l] >> (2 * shift)) & 3;
    const int high_set = (b.hmask[v % 32] >> (v / 32)) & 1;
    const int q = low - (high_set ? 0 : 4);
    const float dl = d * static_cast<float>(scales[v / 16]);
    y[v] = dl * static_cast<float>(q);
  }
}

// Scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. Sub-blocks 0..3 keep their 6 bits in the
// low bits of bytes j (scale) and j+4 (min); 4..7 split theirs: low 4 bits in byte j+4's nibbles,
// high 2 bits in the top bits of bytes j-4 (scale) and j (min).
void ScaleMinK4(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void DecodeQ4_K(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ4_K>(p);
  const float d = F16ToF32(b.d);
  const float dmin = F16ToF32(b.dmin);
  for (int c = 0; c < 4; ++c) {  // 64 weights per chunk: two sub-blocks sharing 32 bytes of qs
    int sc0, m0, sc1, m1;
    ScaleMinK4(2 * c, b.scales, &sc0, &m0);
    ScaleMinK4(2 * c + 1, b.scales, &sc1, &m1);
    const float d0 = d * static_cast<float>(sc0), dm0 = dmin * static_cast<float>(m0);
    const float d1 = d * static_cast<float>(sc1), dm1 = dmin * static_cast<float>(m1);
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = b.qs[32 * c + l];
      y[64 * c + l] = d0 * static_cast<float>(q & 0x0F) - dm0;
      y[64 * c + 32 + l] = d1 * static_cast<float>(q >> 4) - dm1;
    }
  }
}

void DecodeQ5_K(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ5_K>(p);
  const float d = F16ToF32(b.d);
  const float dmin = F16ToF32(b.dmin);
  for (int c = 0; c < 4; ++c) {
    int sc0, m0, sc1, m1;
    ScaleMinK4(2 * c, b.scales, &sc0, &m0);
    ScaleMinK4(2 * c + 1, b.scales, &sc1, &m1);
    const float d0 = d * static_cast<float>(sc0), dm0 = dmin * static_cast<float>(m0);
    const float d1 = d * static_cast<float>(sc1), dm1 = dmin * static_cast<float>(m1);
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = b.qs[32 * c + l];
      const int lo = (q & 0x0F) | (((b.qh[l] >> (2 * c)) & 1) << 4);
      const int hi = (q >> 4) | (((b.qh[l] >> (2 * c + 1)) & 1) << 4);
      y[64 * c + l] = d0 * static_cast<float>(lo) - dm0;
      y[64 * c + 32 + l] = d1 * static_cast<float>(hi) - dm1;
    }
  }
}

void DecodeQ6_K(const uint8_t* p, float* y) {
  const auto b = LoadBlock<BlockQ6_K>(p);
  const float d = F16ToF32(b.d);
  for (int v = 0; v < kQK_K; ++v) {
    // Within each half of 128 weights, quarter k (32 weights) takes the low (k < 2) or high nibble
    // of ql[64h + 32(k % 2) + l] and bits 2k..2k+1 of qh[32h + l].
    const int h = v / 128, k = (v % 128) / 32, l = v % 32;
    const uint8_t ql = b.ql[64 * h + 32 * (k % 2) + l];
    const int low = k < 2 ? (ql & 0x0F) : (ql >> 4);
    const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
    const int q = (low | (high << 4)) - 32;
    const float dl = d * static_cast<float>(b.scales[v / 16]);
    y[v] = dl * static_cast<float>(q);
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

BlockDecoder DecoderFor(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0: return DecodeQ4_0;
    case GgmlType::kQ4_1: return DecodeQ4_1;
    case GgmlType::kQ5_0: return DecodeQ5_0;
    case GgmlType::kQ5_1: return DecodeQ5_1;
    case GgmlType::kQ8_0: return DecodeQ8_0;
    case GgmlType::kQ2_K: return DecodeQ2_K;
    case GgmlType::kQ3_K: return DecodeQ3_K;
    case GgmlType::kQ4_K: return DecodeQ4_K;
    case GgmlType::kQ5_K: return DecodeQ5_K;
    case GgmlType::kQ6_K: return DecodeQ6_K;
    default: return nullptr;
  }
}

}  // namespace

GgmlTypeTraits GetGgmlTypeTraits(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return {"F32", 1, 4, true};
    case GgmlType::kF16: return {"F16", 1, 2, true};
    case GgmlType::kBF16: return {"BF16", 1, 2, true};
    case GgmlType::kQ4_0: return {"Q4_0", kQK4_0, sizeof(BlockQ4_0), true};
    case GgmlType::kQ4_1: return {"Q4_1", kQK4_1, sizeof(BlockQ4_1), true};
    case GgmlType::kQ5_0: return {"Q5_0", kQK5_0, sizeof(BlockQ5_0), true};
    case GgmlType::kQ5_1: return {"Q5_1", kQK5_1, sizeof(BlockQ5_1), true};
    case GgmlType::kQ8_0: return {"Q8_0", kQK8_0, sizeof(BlockQ8_0), true};
    case GgmlType::kQ2_K: return {"Q2_K", kQK_K, sizeof(BlockQ2_K), true};
    case GgmlType::kQ3_K: return {"Q3_K", kQK_K, sizeof(BlockQ3_K), true};
    case GgmlType::kQ4_K: return {"Q4_K", kQK_K, sizeof(BlockQ4_K), true};
    case GgmlType::kQ5_K: return {"Q5_K", kQK_K, sizeof(BlockQ5_K), true};
    case GgmlType::kQ6_K: return {"Q6_K", kQK_K, sizeof(BlockQ6_K), true};
    // Types we only need to size, so that a file holding them still parses (sizes from the
    // GGML type table; docs/GGUF.md).
    case GgmlType::kQ8_1: return {"Q8_1", 32, 40, false};
    case GgmlType::kQ8_K: return {"Q8_K", 256, 292, false};
    case GgmlType::kIQ2_XXS: return {"IQ2_XXS", 256, 66, false};
    case GgmlType::kIQ2_XS: return {"IQ2_XS", 256, 74, false};
    case GgmlType::kIQ3_XXS: return {"IQ3_XXS", 256, 98, false};
    case GgmlType::kIQ1_S: return {"IQ1_S", 256, 50, false};
    case GgmlType::kIQ4_NL: return {"IQ4_NL", 32, 18, false};
    case GgmlType::kIQ3_S: return {"IQ3_S", 256, 110, false};
    case GgmlType::kIQ2_S: return {"IQ2_S", 256, 82, false};
    case GgmlType::kIQ4_XS: return {"IQ4_XS", 256, 136, false};
    case GgmlType::kI8: return {"I8", 1, 1, false};
    case GgmlType::kI16: return {"I16", 1, 2, false};
    case GgmlType::kI32: return {"I32", 1, 4, false};
    case GgmlType::kI64: return {"I64", 1, 8, false};
    case GgmlType::kF64: return {"F64", 1, 8, false};
    case GgmlType::kIQ1_M: return {"IQ1_M", 256, 56, false};
    case GgmlType::kTQ1_0: return {"TQ1_0", 256, 54, false};
    case GgmlType::kTQ2_0: return {"TQ2_0", 256, 66, false};
  }
  return {};
}

absl::Status GgmlByteSize(GgmlType type, uint64_t num_values, uint64_t* bytes) {
  const GgmlTypeTraits t = GetGgmlTypeTraits(type);
  if (t.block_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown ggml type id ", static_cast<uint32_t>(type)));
  }
  if (num_values % t.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(num_values, " values are not a whole number of ",
                                                   t.name, " blocks of ", t.block_size));
  }
  const uint64_t blocks = num_values / t.block_size;
  if (blocks > std::numeric_limits<uint64_t>::max() / t.type_size) {
    return absl::OutOfRangeError(absl::StrCat("size of ", num_values, " ", t.name, " values overflows"));
  }
  *bytes = blocks * t.type_size;
  return absl::OkStatus();
}

absl::Status DequantizeGguf(GgmlType type, absl::Span<const uint8_t> src, absl::Span<float> dst) {
  const GgmlTypeTraits t = GetGgmlTypeTraits(type);
  if (!t.can_dequantize) {
    return absl::UnimplementedError(absl::StrCat(
        "cannot dequantize ggml type ", t.name.empty() ? absl::StrCat("id ", static_cast<uint32_t>(type))
                                                       : std::string(t.name)));
  }
  uint64_t need = 0;
  if (absl::Status s = GgmlByteSize(type, dst.size(), &need); !s.ok()) return s;
  if (need != src.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dequantize ", t.name, ": ", src.size(),
                                                   " bytes given for ", dst.size(), " values (need ",
                                                   need, ")"));
  }
  const uint8_t* p = src.data();
  float* y = dst.data();
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(y, p, dst.size() * sizeof(float));
      return absl::OkStatus();
    case GgmlType::kF16:
      for (size_t i = 0; i < dst.size(); ++i) y[i] = F16ToF32(LoadU16(p + 2 * i));
      return absl::OkStatus();
    case GgmlType::kBF16:
      for (size_t i = 0; i < dst.size(); ++i) y[i] = Bf16ToF32(LoadU16(p + 2 * i));
      return absl::OkStatus();
    default:
      break;
  }
  const BlockDecoder decode = DecoderFor(type);
  const size_t blocks = dst.size() / t.block_size;
  for (size_t i = 0; i < blocks; ++i) decode(p + i * t.type_size, y + i * t.block_size);
  return absl::OkStatus();
}

}  // namespace bitloom::formats
