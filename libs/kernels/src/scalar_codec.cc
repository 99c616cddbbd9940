#include "bitloom/kernels/scalar_codec.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/kernels/hadamard.h"
#include "dot.h"
#include "parallel.h"

namespace bitloom::kernels {
namespace {

absl::Status CheckBlob(const ScalarCodecLayout& layout, absl::Span<const uint8_t> blob,
                       const char* op) {
  if (layout.total_bytes <= 0 || layout.bits < kScalarMinBits || layout.bits > kScalarMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": layout is not initialised"));
  }
  if (static_cast<int64_t>(blob.size()) != layout.total_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": blob is ", blob.size(), " bytes, layout needs ", layout.total_bytes));
  }
  return absl::OkStatus();
}

uint32_t LoadWord(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // the format is little-endian, as is every host Bitloom builds for
}

// Decodes row r into out[0, cols) (fp32, rotated space).
void DequantizeRow(const ScalarCodecLayout& l, const uint8_t* blob, int64_t r, float* out) {
  const uint8_t* row_codes = blob + r * l.row_stride_words * 4;
  const uint8_t* row_scales = blob + l.scales_offset + r * l.groups_per_row * 2;
  const float center = ScalarGridCenter(l.bits);
  uint32_t words[kScalarMaxBits];
  for (int64_t b = 0; b < l.blocks_per_row; ++b) {
    for (int w = 0; w < l.bits; ++w) words[w] = LoadWord(row_codes + (b * l.bits + w) * 4);
    const int64_t c0 = b * kScalarCodesPerBlock;
    const int64_t n = std::min<int64_t>(kScalarCodesPerBlock, l.cols - c0);
    // A block never straddles groups (group_size is a multiple of 32), so one scale per block.
    uint16_t h;
    std::memcpy(&h, row_scales + (c0 / l.group_size) * 2, 2);
    const float s = F16ToF32(h);
    for (int i = 0; i < n; ++i) {
      out[c0 + i] = s * (static_cast<float>(ScalarCodeAt(words, l.bits, i)) - center);
    }
  }
}

}  // namespace

absl::StatusOr<ScalarCodecLayout> MakeScalarCodecLayout(int64_t rows, int64_t cols, int bits,
                                                        int group_size) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("scalar codec: shape [", rows, ", ", cols, "] must be positive"));
  }
  if (bits < kScalarMinBits || bits > kScalarMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat("scalar codec: bits ", bits, " outside [",
                                                   kScalarMinBits, ", ", kScalarMaxBits, "]"));
  }
  if (group_size <= 0 || group_size % kScalarCodesPerBlock != 0 ||
      group_size > kScalarMaxGroupSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scalar codec: group_size ", group_size, " must be a positive multiple of 32 up to 65536"));
  }
  ScalarCodecLayout l;
  l.rows = rows;
  l.cols = cols;
  l.bits = bits;
  l.group_size = group_size;
  l.blocks_per_row = (cols + kScalarCodesPerBlock - 1) / kScalarCodesPerBlock;
  l.groups_per_row = (cols + group_size - 1) / group_size;
  const int64_t words = l.blocks_per_row * bits;
  l.row_stride_words =
      (words + kScalarRowAlignWords - 1) / kScalarRowAlignWords * kScalarRowAlignWords;
  l.codes_bytes = rows * l.row_stride_words * 4;
  l.scales_offset = l.codes_bytes;
  l.scales_bytes = rows * l.groups_per_row * 2;
  l.total_bytes = l.codes_bytes + l.scales_bytes;
  return l;
}

absl::StatusOr<std::vector<uint8_t>> PackScalarCodec(const ScalarCodecLayout& l,
                                                     absl::Span<const uint8_t> codes,
                                                     absl::Span<const uint16_t> scales) {
  if (l.total_bytes <= 0)
    return absl::InvalidArgumentError("PackScalarCodec: layout is not initialised");
  if (static_cast<int64_t>(codes.size()) != l.rows * l.cols ||
      static_cast<int64_t>(scales.size()) != l.rows * l.groups_per_row) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PackScalarCodec: got ", codes.size(), " codes and ", scales.size(),
        " scales, layout needs ", l.rows * l.cols, " and ", l.rows * l.groups_per_row));
  }
  const uint32_t max_code = (1u << l.bits) - 1u;
  std::vector<uint8_t> blob(l.total_bytes, 0);
  for (int64_t r = 0; r < l.rows; ++r) {
    uint8_t* row = blob.data() + r * l.row_stride_words * 4;
    for (int64_t b = 0; b < l.blocks_per_row; ++b) {
      uint64_t words[kScalarMaxBits + 1] = {};
      const int64_t c0 = b * kScalarCodesPerBlock;
      const int64_t n = std::min<int64_t>(kScalarCodesPerBlock, l.cols - c0);
      for (int i = 0; i < n; ++i) {
        const uint32_t q = codes[r * l.cols + c0 + i];
        if (q > max_code) {
          return absl::InvalidArgumentError(absl::StrCat("PackScalarCodec: code ", q, " at [", r,
                                                         ", ", c0 + i, "] exceeds ", l.bits,
                                                         " bits"));
        }
        const int bit = i * l.bits;
        words[bit >> 5] |= static_cast<uint64_t>(q) << (bit & 31);
        // The part of a straddling code that spilled past bit 31 belongs to the next word.
        if ((bit & 31) + l.bits > 32)
          words[(bit >> 5) + 1] |= static_cast<uint64_t>(q) >> (32 - (bit & 31));
      }
      for (int w = 0; w < l.bits; ++w) {
        const uint32_t v = static_cast<uint32_t>(words[w]);
        std::memcpy(row + (b * l.bits + w) * 4, &v, 4);
      }
    }
  }
  std::memcpy(blob.data() + l.scales_offset, scales.data(), scales.size() * 2);
  return blob;
}

absl::Status UnpackScalarCodec(const ScalarCodecLayout& l, absl::Span<const uint8_t> blob,
                               std::vector<uint8_t>* codes, std::vector<uint16_t>* scales) {
  if (absl::Status s = CheckBlob(l, blob, "UnpackScalarCodec"); !s.ok()) return s;
  codes->assign(l.rows * l.cols, 0);
  scales->assign(l.rows * l.groups_per_row, 0);
  for (int64_t r = 0; r < l.rows; ++r) {
    const uint8_t* row = blob.data() + r * l.row_stride_words * 4;
    uint32_t words[kScalarMaxBits];
    for (int64_t b = 0; b < l.blocks_per_row; ++b) {
      for (int w = 0; w < l.bits; ++w) words[w] = LoadWord(row + (b * l.bits + w) * 4);
      const int64_t c0 = b * kScalarCodesPerBlock;
      const int64_t n = std::min<int64_t>(kScalarCodesPerBlock, l.cols - c0);
      for (int i = 0; i < n; ++i)
        (*codes)[r * l.cols + c0 + i] = static_cast<uint8_t>(ScalarCodeAt(words, l.bits, i));
    }
  }
  std::memcpy(scales->data(), blob.data() + l.scales_offset, scales->size() * 2);
  return absl::OkStatus();
}

absl::Status DequantizeScalarCodec(const ScalarCodecLayout& l, absl::Span<const uint8_t> blob,
                                   float* w, ThreadPool* pool) {
  if (absl::Status s = CheckBlob(l, blob, "DequantizeScalarCodec"); !s.ok()) return s;
  if (w == nullptr) return absl::InvalidArgumentError("DequantizeScalarCodec: w is null");
  internal::ParallelRange(pool, l.rows, l.cols * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) DequantizeRow(l, blob.data(), r, w + r * l.cols);
  });
  return absl::OkStatus();
}

absl::Status ScalarCodecGemv(const ScalarCodecGemvParams& p, ThreadPool* pool) {
  if (p.layout == nullptr) return absl::InvalidArgumentError("ScalarCodecGemv: layout is null");
  const ScalarCodecLayout& l = *p.layout;
  if (absl::Status s = CheckBlob(l, p.blob, "ScalarCodecGemv"); !s.ok()) return s;
  if (p.batch < 0) return absl::InvalidArgumentError("ScalarCodecGemv: batch must be non-negative");
  if (p.batch == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr)
    return absl::InvalidArgumentError("ScalarCodecGemv: x and y must be non-null");
  if (p.rotation != nullptr && p.rotation->size() != l.cols) {
    return absl::InvalidArgumentError(absl::StrCat("ScalarCodecGemv: rotation size ",
                                                   p.rotation->size(), " != in_features ", l.cols));
  }
  // This is where inference pays the rotation: once per distinct activation vector (tensors that
  // read the same input share a seed, so q/k/v and gate/up rotate once).
  std::vector<float> xr(p.x, p.x + p.batch * l.cols);
  if (p.rotation != nullptr) p.rotation->Apply(xr.data(), p.batch, pool);
  internal::ParallelRange(pool, l.rows, l.cols * (p.batch + 2), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(l.cols);
    for (int64_t r = r0; r < r1; ++r) {
      DequantizeRow(l, p.blob.data(), r, row.data());
      for (int64_t b = 0; b < p.batch; ++b) {
        p.y[b * l.rows + r] = internal::DotF32(xr.data() + b * l.cols, row.data(), l.cols);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
