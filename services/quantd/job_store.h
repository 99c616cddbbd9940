// JobStore: the on-disk state of quantization jobs, so that jobs survive a restart (or a SIGKILL).
//
//   <root>/<id>/job.pb              the v1::Job, binary protobuf, replaced atomically on every save
//   <root>/<id>/checkpoints/        QuantizationPipeline's per-block checkpoints (while running)
//   <root>/<id>/artifact_temp_path  the artifact writer's temp file, while one exists, so that the
//                                   file of a killed run is removed when the job resumes or ends
//
// quantd puts the root at <store>/.jobs: inside the store (same filesystem and lifetime), and
// hidden, so ModelStore never lists it. Saves are atomic (temporary file, fsync, rename, fsync of
// the directory): after a crash job.pb is the old or the new record, never a torn one.
// Thread-safe: it holds no mutable state; callers serialise saves of one job.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::quantd {

class JobStore {
 public:
  // Opens (creating when missing) the jobs directory `root`.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& root);

  const std::string& root() const { return root_; }
  std::string JobDir(const std::string& id) const;
  std::string CheckpointDir(const std::string& id) const;

  // Writes job.pb atomically, creating the job's directory when needed.
  absl::Status Save(const v1::Job& job) const;
  // Every readable job record. Unreadable ones (a directory without job.pb, a corrupt file) are
  // logged and skipped: one bad record must not keep quantd from starting.
  std::vector<v1::Job> LoadAll() const;

  // Records / forgets the artifact writer's temporary file of job `id`.
  absl::Status RecordTempArtifact(const std::string& id, const std::string& temp_path) const;
  void ForgetTempArtifact(const std::string& id) const;
  // Deletes the recorded temporary artifact file (left by a killed run) and the record.
  absl::Status RemoveTempArtifact(const std::string& id) const;
  // Deletes what a run of job `id` leaves behind: the checkpoints and the recorded temporary
  // artifact file. The job record stays. Idempotent.
  absl::Status RemoveWorkFiles(const std::string& id) const;

 private:
  explicit JobStore(std::string root) : root_(std::move(root)) {}
  const std::string root_;
};

// Writes `bytes` to `path` atomically: `path`.tmp, fsync, rename, fsync of the directory.
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace bitloom::quantd
