// The fixed parts of the artifact file format v1 (docs/FORMAT.md): constants, the 64-byte header
// and its little-endian encoding.
//
// Plain values and pure functions: no ownership, thread-safe. EncodeHeader/DecodeHeader only
// translate bytes; the layout rules (versions, bounds, alignment) are enforced by ArtifactReader,
// so a tool that must look at a damaged file can still decode what is there.
#pragma once

#include <array>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bitloom::modelstore {

// "BITLOOM" followed by a NUL byte.
inline constexpr std::array<uint8_t, 8> kMagic = {'B', 'I', 'T', 'L', 'O', 'O', 'M', '\0'};
inline constexpr uint64_t kHeaderSize = 64;
// The header checksum covers every header byte before it.
inline constexpr uint64_t kHeaderChecksummedSize = 56;
// Blob offsets are multiples of this, so a blob can be copied or mapped page-aligned straight to a
// device.
inline constexpr uint64_t kBlobAlignment = 4096;
// The format version this library writes.
inline constexpr uint32_t kFormatVersion = 1;
// The oldest reader version that can read what this library writes.
inline constexpr uint32_t kWrittenMinReaderVersion = 1;
// The reader version this library implements: it opens files whose min_reader_version is <= this.
inline constexpr uint32_t kReaderVersion = 1;
// The data region of a v1 file starts at the first aligned offset after the header.
inline constexpr uint64_t kDataOffset = kBlobAlignment;
// Protobuf cannot parse a message of 2 GiB or more.
inline constexpr uint64_t kMaxManifestSize = (uint64_t{1} << 31) - 1;

// The decoded header. Offsets and sizes are in bytes from the start of the file.
struct FileHeader {
  uint32_t format_version = 0;
  uint32_t min_reader_version = 0;
  uint64_t manifest_offset = 0;
  uint64_t manifest_size = 0;
  // XXH3-64 (seed 0) of the manifest's bytes.
  uint64_t manifest_xxh3 = 0;
  uint64_t data_offset = 0;
  // The size of the whole file; a truncated or extended file disagrees with it.
  uint64_t file_size = 0;
  // XXH3-64 (seed 0) of header bytes [0, 56). Filled by DecodeHeader; EncodeHeader computes it.
  uint64_t header_xxh3 = 0;
};

// The 64 header bytes for `header`, with the magic written and header_xxh3 computed (the field in
// `header` is ignored).
std::array<uint8_t, kHeaderSize> EncodeHeader(const FileHeader& header);

// Decodes the first 64 bytes of `file_prefix`. DATA_LOSS when there are fewer than 64 bytes, the
// magic is wrong or the header checksum does not match. Does not check versions or offsets.
absl::StatusOr<FileHeader> DecodeHeader(absl::Span<const uint8_t> file_prefix);

// XXH3-64 with seed 0, the checksum used everywhere in the format.
uint64_t Xxh3(absl::Span<const uint8_t> bytes);

}  // namespace bitloom::modelstore
