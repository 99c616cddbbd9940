// SafetensorsFile: one memory-mapped *.safetensors file with its validated header (docs/SAFETENSORS.md).
//
// Open() checks the header before anything is trusted: the 8-byte JSON length is bounded by the file
// and by kMaxHeaderBytes, the JSON is an object of tensors with a known dtype, a shape and
// [begin, end) data offsets inside the data section, whose size equals the shape times the dtype
// size, and tensors do not overlap. Tensor data stays in the mapping until read. Immutable after
// Open(), so thread-safe for concurrent readers.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/mapped_file.h"

namespace bitloom::formats {

struct SafetensorsTensor {
  std::string name;
  // As in the header: "F32", "F16", "BF16", "I64", ...
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t num_elements = 0;
  // Absolute offset in the file and size in bytes.
  uint64_t file_offset = 0;
  uint64_t size_bytes = 0;
};

class SafetensorsFile {
 public:
  // The reference implementation's bound on the JSON header.
  static constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // The optional "__metadata__" string map.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* Find(const std::string& name) const;

  absl::StatusOr<absl::Span<const uint8_t>> Bytes(const SafetensorsTensor& t) const;
  // F32, F16 or BF16 data to fp32 into `out` (exactly num_elements); UNIMPLEMENTED for other dtypes.
  absl::Status ReadF32(const SafetensorsTensor& t, absl::Span<float> out) const;

 private:
  explicit SafetensorsFile(MappedFile file) : file_(std::move(file)) {}
  absl::Status Parse();

  MappedFile file_;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Bytes per element of a safetensors dtype; 0 when unknown.
uint64_t SafetensorsDtypeSize(const std::string& dtype);

}  // namespace bitloom::formats
