// MappedFile: a read-only, memory-mapped file that hands out bounds-checked, zero-copy views.
//
// The mapping lives as long as the MappedFile (move-only; the destructor unmaps). Views are plain
// spans into the mapping and must not outlive it. Unlinking or renaming the file after it was opened
// does not disturb the mapping. Thread-safe for concurrent readers once constructed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bitloom {

class MappedFile {
 public:
  // Maps the whole of `path` read-only. NOT_FOUND when it does not exist, FAILED_PRECONDITION when it
  // is not a regular file. An empty file maps to an empty view.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }

  // [offset, offset + length) when it lies inside the file; OUT_OF_RANGE otherwise (overflow-safe).
  absl::StatusOr<absl::Span<const uint8_t>> View(uint64_t offset, uint64_t length) const;

  // Advises the kernel that the range will be read sequentially soon (best effort).
  void WillNeed(uint64_t offset, uint64_t length) const;

 private:
  void Reset();

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace bitloom
