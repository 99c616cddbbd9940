// Sha256: incremental SHA-256 (FIPS 180-4), used for SourceModel.digest. Not thread-safe; one
// instance per stream.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace bitloom::formats {

class Sha256 {
 public:
  Sha256();
  void Update(absl::Span<const uint8_t> data);
  // Finishes the stream; the object must not be updated afterwards.
  std::array<uint8_t, 32> Finish();
  // Lower-case hex of Finish().
  std::string FinishHex();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  uint64_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace bitloom::formats
