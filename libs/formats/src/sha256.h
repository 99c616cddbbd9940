// Sha256: incremental SHA-256 of a model's source files, for SourceModel.digest, over OpenSSL's
// libcrypto (EVP). libcrypto uses the CPU's SHA extensions where present: a 16 GB source hashes in
// seconds, where the portable loop this replaced ran at ~180 MB/s (90 s of an 8B conversion,
// docs/RESULTS.md). Not thread-safe; one instance per stream.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

struct evp_md_ctx_st;

namespace bitloom::formats {

class Sha256 {
 public:
  // INTERNAL when libcrypto cannot set up a SHA-256 context.
  static absl::StatusOr<Sha256> Create();

  absl::Status Update(absl::Span<const uint8_t> data);
  // Appends a whole file, mapped and read in 64 MiB pieces with read-ahead.
  absl::Status UpdateFromFile(const std::string& path);
  // Finishes the stream (no Update afterwards) and returns the digest as lower-case hex.
  absl::StatusOr<std::string> FinishHex();

 private:
  struct FreeContext {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  explicit Sha256(std::unique_ptr<evp_md_ctx_st, FreeContext> ctx) : ctx_(std::move(ctx)) {}

  std::unique_ptr<evp_md_ctx_st, FreeContext> ctx_;
};

}  // namespace bitloom::formats
