// ByteReader: a bounds-checked little-endian cursor over a byte span, used by the file parsers.
// Every read checks the remaining length first and fails with INVALID_ARGUMENT naming `what` and the
// offset, so a parser written with it cannot read past the end of a truncated file.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace bitloom::formats {

static_assert(std::endian::native == std::endian::little,
              "the file readers assume a little-endian host (GGUF and safetensors are little-endian)");

class ByteReader {
 public:
  ByteReader(absl::Span<const uint8_t> data, absl::string_view file_label)
      : data_(data), label_(file_label) {}

  uint64_t offset() const { return pos_; }
  uint64_t remaining() const { return data_.size() - pos_; }

  absl::Status Truncated(absl::string_view what, uint64_t need) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": truncated reading ", what, " at offset ",
                                                   pos_, " (need ", need, " bytes, ", remaining(),
                                                   " left)"));
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<absl::Span<const uint8_t>> Bytes(uint64_t n, absl::string_view what) {
    if (remaining() < n) return Truncated(what, n);
    auto s = data_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

  absl::StatusOr<absl::string_view> String(uint64_t n, absl::string_view what) {
    if (remaining() < n) return Truncated(what, n);
    absl::string_view s(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    if (remaining() < n) return Truncated(what, n);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> data_;
  absl::string_view label_;
  uint64_t pos_ = 0;
};

}  // namespace bitloom::formats
