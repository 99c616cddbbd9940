// ArtifactReader: a memory-mapped, verified, read-only view of one artifact file (docs/FORMAT.md).
//
// Open() maps the file and checks everything the format promises before returning: the header
// (magic, checksum, versions, file size), the manifest (bounds, checksum, parse) and every tensor
// entry (alignment, bounds, overlap, size for its codec and shape); blob checksums too when asked.
// Nothing about the file is trusted until those checks pass, so any input yields a clean Status and
// never an out-of-bounds read. Errors: NOT_FOUND (no such file), DATA_LOSS (truncated or corrupted;
// the message says what and where), FAILED_PRECONDITION (written for a newer reader).
//
// The reader owns the mapping; spans from TensorBytes() point into it and must not outlive the
// reader. Deleting or replacing the file in the store does not disturb an open reader. Thread-safe:
// all methods are const.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bitloom/core/mapped_file.h"
#include "bitloom/modelstore/format.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::modelstore {

struct ReaderOptions {
  // Also hash every tensor blob on Open (reads the whole file). Header and manifest checksums are
  // always verified.
  bool verify_checksums = false;
};

class ArtifactReader {
 public:
  static absl::StatusOr<std::unique_ptr<ArtifactReader>> Open(const std::string& path,
                                                              ReaderOptions options = {});

  ArtifactReader(const ArtifactReader&) = delete;
  ArtifactReader& operator=(const ArtifactReader&) = delete;

  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  const FileHeader& header() const { return header_; }
  const v1::ArtifactManifest& manifest() const { return manifest_; }

  // The entry named `name`, or nullptr.
  const v1::TensorEntry* FindTensor(absl::string_view name) const;

  // The blob of tensor `name`, zero-copy from the mapping. NOT_FOUND when there is no such tensor.
  absl::StatusOr<absl::Span<const uint8_t>> TensorBytes(absl::string_view name) const;

  // Hashes every blob and compares with the manifest; DATA_LOSS naming the first bad tensor.
  absl::Status VerifyChecksums() const;

 private:
  ArtifactReader() = default;

  // Checks the header against the actual file; fills header_.
  absl::Status VerifyHeader();
  // Checks, hashes and parses the manifest; fills manifest_.
  absl::Status LoadManifest();
  // Checks every tensor entry's placement and size; fills index_.
  absl::Status VerifyTensorTable();
  // "<path>: <what>" as DATA_LOSS.
  absl::Status Corrupt(absl::string_view what) const;

  MappedFile file_;
  FileHeader header_;
  v1::ArtifactManifest manifest_;
  // Tensor name -> index into manifest_.tensors().
  absl::flat_hash_map<std::string, int> index_;
};

}  // namespace bitloom::modelstore
