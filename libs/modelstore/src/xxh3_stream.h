// Xxh3Stream: incremental XXH3-64 (seed 0), equal to Xxh3() over the concatenated input. Owns its
// xxhash state; not thread-safe. Private to libs/modelstore.
#pragma once

#include <xxhash.h>

#include <cstdint>

#include "absl/types/span.h"

namespace bitloom::modelstore::internal {

class Xxh3Stream {
 public:
  Xxh3Stream() : state_(XXH3_createState()) { Reset(); }
  ~Xxh3Stream() { XXH3_freeState(state_); }
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;

  void Reset() { XXH3_64bits_reset(state_); }
  void Update(absl::Span<const uint8_t> bytes) {
    XXH3_64bits_update(state_, bytes.data(), bytes.size());
  }
  uint64_t Digest() const { return XXH3_64bits_digest(state_); }

 private:
  XXH3_state_t* state_;
};

}  // namespace bitloom::modelstore::internal
