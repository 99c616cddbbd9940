// ModelStore: a directory of published artifacts, one file per name, plus a private temp directory.
//
//   <root>/<name>.bitloom   published artifacts (docs/FORMAT.md, "The model store")
//   <root>/.tmp/            writers' temporary files; never listed, renamed into <root> on publish
//
// Publishing is a rename within one filesystem, so an artifact appears whole or not at all;
// deleting unlinks the name, and readers that already mapped the file keep working. The store holds
// no mutable in-memory state (the directory is the state), so it is thread-safe and several
// processes may share one root. Returned readers and writers are owned by the caller and may
// outlive nothing but the files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/v1/manifest.pb.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::modelstore {

struct StoreOptions {
  // Temp files untouched for this long are left over from a crashed writer and removed by Open().
  // Zero or negative disables the sweep. A live writer touches its file with every write, so only
  // writers idle for this long could lose theirs.
  absl::Duration stale_temp_age = absl::Hours(24);
};

// Describe()'s result.
struct ArtifactDescription {
  v1::ArtifactSummary summary;
  v1::ArtifactManifest manifest;
};

class ModelStore {
 public:
  // The file name suffix of published artifacts.
  static constexpr absl::string_view kArtifactSuffix = ".bitloom";
  // The temp directory's name inside the root.
  static constexpr absl::string_view kTempDirName = ".tmp";
  static constexpr size_t kMaxNameLength = 128;

  // Opens the store at `root`, creating it and root/.tmp when missing.
  static absl::StatusOr<std::unique_ptr<ModelStore>> Open(const std::string& root,
                                                          StoreOptions options = {});

  // OK when `name` is 1..128 characters of [A-Za-z0-9._-], does not start with '.' (so it is never
  // ".", "..", a hidden file or the temp directory); INVALID_ARGUMENT naming the field `name`
  // otherwise.
  static absl::Status ValidateArtifactName(absl::string_view name);

  const std::string& root() const { return root_; }
  const std::string& temp_dir() const { return temp_dir_; }

  // root/<name>.bitloom, after validating `name`.
  absl::StatusOr<std::string> PathOf(absl::string_view name) const;

  // A writer that publishes as `name`. ALREADY_EXISTS when `name` exists and !overwrite; that is
  // checked again atomically when the writer publishes, so of several concurrent !overwrite writers
  // exactly one succeeds.
  absl::StatusOr<std::unique_ptr<ArtifactWriter>> NewWriter(absl::string_view name,
                                                            bool overwrite) const;

  // Summaries of every readable artifact, sorted by name. Unreadable files are skipped with a
  // warning in the log; temp files are never listed.
  absl::StatusOr<std::vector<v1::ArtifactSummary>> List() const;

  // The manifest and summary of `name`; with verify_checksums every blob is hashed too.
  absl::StatusOr<ArtifactDescription> Describe(absl::string_view name, bool verify_checksums) const;

  // Removes `name` from the store. NOT_FOUND when absent. Open readers keep their mapping.
  absl::Status Delete(absl::string_view name) const;

  // Opens and verifies `name`. NOT_FOUND when absent.
  absl::StatusOr<std::unique_ptr<ArtifactReader>> OpenReader(absl::string_view name,
                                                             ReaderOptions options = {}) const;

  // The summary of an open artifact, as List() reports it.
  static v1::ArtifactSummary Summarize(absl::string_view name, const ArtifactReader& reader);

 private:
  ModelStore(std::string root, std::string temp_dir)
      : root_(std::move(root)), temp_dir_(std::move(temp_dir)) {}

  // Removes temp files older than `age`; failures are logged, never fatal.
  void RemoveStaleTempFiles(absl::Duration age) const;

  const std::string root_;
  const std::string temp_dir_;
};

}  // namespace bitloom::modelstore
