// The pipeline's per-block checkpoint files: a tiny length-checked binary container.
//
//   "BLQCKPT1" | u64 fingerprint | u64 payload_size | payload | u64 FNV-1a-64 of payload
//
// Written to a temporary name, fsync'ed and renamed, so a file either exists whole or not at all; a
// file that fails any check reads as absent (the block is recomputed). Little-endian host assumed,
// like the artifact format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bitloom::quant::internal {

uint64_t Fnv1a64(const void* data, size_t size, uint64_t h = 0xcbf29ce484222325ull);

class ByteWriter {
 public:
  void U64(uint64_t v) { Raw(&v, 8); }
  void F64(double v) { Raw(&v, 8); }
  void Bytes(const void* p, size_t n) {
    U64(n);
    Raw(p, n);
  }
  void Str(const std::string& s) { Bytes(s.data(), s.size()); }
  void Floats(absl::Span<const float> v) { Bytes(v.data(), v.size() * sizeof(float)); }
  const std::string& data() const { return buf_; }

 private:
  void Raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  std::string buf_;
};

// Every read fails (returns false) once the data runs out; check ok() at the end.
class ByteReader {
 public:
  explicit ByteReader(const std::string& data) : data_(data) {}
  bool U64(uint64_t* v) { return Raw(v, 8); }
  bool F64(double* v) { return Raw(v, 8); }
  bool Str(std::string* s);
  bool Floats(std::vector<float>* v);
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  bool Raw(void* p, size_t n);
  const std::string& data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

absl::Status WriteCheckpointFile(const std::string& path, uint64_t fingerprint,
                                 const std::string& payload);
// NOT_FOUND when absent or damaged; FAILED_PRECONDITION when intact but from another job
// (fingerprint).
absl::StatusOr<std::string> ReadCheckpointFile(const std::string& path, uint64_t fingerprint);

}  // namespace bitloom::quant::internal
