#include "bitloom/modelstore/format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitloom::modelstore {
namespace {

// Explicit byte-by-byte little-endian coding, so the format does not depend on the host's byte
// order or on the alignment of the buffer.
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Byte offsets of the header fields (docs/FORMAT.md has the diagram).
constexpr size_t kOffFormatVersion = 8;
constexpr size_t kOffMinReaderVersion = 12;
constexpr size_t kOffManifestOffset = 16;
constexpr size_t kOffManifestSize = 24;
constexpr size_t kOffManifestXxh3 = 32;
constexpr size_t kOffDataOffset = 40;
constexpr size_t kOffFileSize = 48;
constexpr size_t kOffHeaderXxh3 = 56;
static_assert(kOffHeaderXxh3 == kHeaderChecksummedSize);
static_assert(kOffHeaderXxh3 + 8 == kHeaderSize);

}  // namespace

uint64_t Xxh3(absl::Span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

std::array<uint8_t, kHeaderSize> EncodeHeader(const FileHeader& header) {
  std::array<uint8_t, kHeaderSize> out{};
  std::copy(kMagic.begin(), kMagic.end(), out.begin());
  PutU32(&out[kOffFormatVersion], header.format_version);
  PutU32(&out[kOffMinReaderVersion], header.min_reader_version);
  PutU64(&out[kOffManifestOffset], header.manifest_offset);
  PutU64(&out[kOffManifestSize], header.manifest_size);
  PutU64(&out[kOffManifestXxh3], header.manifest_xxh3);
  PutU64(&out[kOffDataOffset], header.data_offset);
  PutU64(&out[kOffFileSize], header.file_size);
  PutU64(&out[kOffHeaderXxh3], Xxh3(absl::MakeConstSpan(out.data(), kHeaderChecksummedSize)));
  return out;
}

absl::StatusOr<FileHeader> DecodeHeader(absl::Span<const uint8_t> file_prefix) {
  if (file_prefix.size() < kHeaderSize) {
    return absl::DataLossError(absl::StrCat(
        "file is ", file_prefix.size(), " bytes, shorter than the ", kHeaderSize, "-byte header"));
  }
  const uint8_t* p = file_prefix.data();
  if (!std::equal(kMagic.begin(), kMagic.end(), p)) {
    return absl::DataLossError(
        "not a Bitloom artifact: the file does not start with \"BITLOOM\\0\"");
  }
  FileHeader h;
  h.format_version = GetU32(p + kOffFormatVersion);
  h.min_reader_version = GetU32(p + kOffMinReaderVersion);
  h.manifest_offset = GetU64(p + kOffManifestOffset);
  h.manifest_size = GetU64(p + kOffManifestSize);
  h.manifest_xxh3 = GetU64(p + kOffManifestXxh3);
  h.data_offset = GetU64(p + kOffDataOffset);
  h.file_size = GetU64(p + kOffFileSize);
  h.header_xxh3 = GetU64(p + kOffHeaderXxh3);
  const uint64_t actual = Xxh3(file_prefix.subspan(0, kHeaderChecksummedSize));
  if (actual != h.header_xxh3) {
    return absl::DataLossError(absl::StrCat("header checksum mismatch: stored ",
                                            absl::Hex(h.header_xxh3, absl::kZeroPad16),
                                            ", computed ", absl::Hex(actual, absl::kZeroPad16)));
  }
  return h;
}

}  // namespace bitloom::modelstore
