// ArtifactWriter: streams one artifact (docs/FORMAT.md) to a temporary file and publishes it
// atomically.
//
// Tensor blobs are written as they arrive (whole, or in chunks for tensors too large to hold in
// memory); Finish() appends the manifest, writes the header last, fsyncs the file, renames it onto
// its final path and fsyncs the directory. Until Finish() succeeds nothing exists at the final
// path, and a writer that is destroyed or Abort()ed unfinished deletes its temporary file, so a
// reader never sees a partial artifact. The writer owns its file descriptor and temp file. Not
// thread-safe: one thread drives a writer (distinct writers are independent). After any error the
// writer is failed: every later call returns that error and the temp file is removed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::modelstore {

namespace internal {
class Xxh3Stream;
}  // namespace internal

struct WriterOptions {
  // When false, Finish() fails with ALREADY_EXISTS if something exists at the final path, decided
  // atomically at publish time (two writers racing for one path: exactly one wins).
  bool replace_existing = true;
  // When non-empty, Finish() stores it as the manifest's `name` (the store passes the artifact's
  // name).
  std::string artifact_name;
};

class ArtifactWriter {
 public:
  // Creates a new, uniquely named temporary file (O_EXCL) in `temp_dir`, which must be on the same
  // filesystem as `final_path` so that publishing is a rename.
  static absl::StatusOr<std::unique_ptr<ArtifactWriter>> Create(const std::string& final_path,
                                                                const std::string& temp_dir,
                                                                WriterOptions options = {});

  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;
  // Aborts when not finished.
  ~ArtifactWriter();

  // Writes one whole tensor. `meta` names it and gives codec, shape, bits_per_weight, group_size,
  // measured_error and params; its offset, size and xxh3 are filled in by the writer.
  // INVALID_ARGUMENT for an empty or duplicate name, CODEC_UNSPECIFIED, or a size that disagrees
  // with a dense codec's shape.
  absl::Status AddTensor(v1::TensorEntry meta, absl::Span<const uint8_t> bytes);

  // The streaming form of AddTensor: BeginTensor, any number of AppendTensorData, EndTensor. Only
  // one tensor is open at a time.
  absl::Status BeginTensor(v1::TensorEntry meta);
  absl::Status AppendTensorData(absl::Span<const uint8_t> chunk);
  absl::Status EndTensor();

  // Completes and publishes the artifact. `manifest` carries everything except the tensor table,
  // which must be empty (INVALID_ARGUMENT otherwise); created_unix_ms is set to now when 0.
  // ALREADY_EXISTS when replace_existing is false and the final path exists. If only the final
  // directory fsync fails, the artifact is already published (and the error says so) but may not
  // survive a crash.
  absl::Status Finish(v1::ArtifactManifest manifest);

  // Deletes the temporary file; the writer is failed afterwards. Idempotent; a no-op after
  // Finish().
  void Abort();

  const std::string& final_path() const { return final_path_; }
  const std::string& temp_path() const { return temp_path_; }
  // Bytes written to the temp file so far.
  uint64_t bytes_written() const { return position_; }

 private:
  ArtifactWriter(std::string final_path, std::string temp_path, int fd, WriterOptions options);

  // Returns the sticky error, or OK when the writer can still accept calls.
  absl::Status CheckUsable() const;
  // Records `status` as the sticky error and removes the temp file; returns `status`.
  absl::Status Fail(absl::Status status);
  absl::Status Write(absl::Span<const uint8_t> bytes);
  absl::Status PadTo(uint64_t offset);
  absl::Status Publish();

  const std::string final_path_;
  const std::string temp_path_;
  int fd_ = -1;
  const WriterOptions options_;

  uint64_t position_ = 0;
  absl::Status error_;
  bool finished_ = false;
  bool aborted_ = false;

  std::vector<v1::TensorEntry> tensors_;
  absl::flat_hash_set<std::string> names_;

  // The tensor being streamed, when open_ is true.
  bool open_ = false;
  v1::TensorEntry current_;
  uint64_t current_written_ = 0;
  // The exact size a dense codec requires; UINT64_MAX when the codec does not fix it.
  uint64_t current_expected_ = 0;
  std::unique_ptr<internal::Xxh3Stream> hasher_;
};

}  // namespace bitloom::modelstore
