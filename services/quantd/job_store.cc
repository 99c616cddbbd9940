#include "job_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::quantd {
namespace {

namespace fs = std::filesystem;

constexpr char kJobFile[] = "job.pb";
constexpr char kTempRecordFile[] = "artifact_temp_path";

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(errno)));
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync directory", dir);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", temp);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = ErrnoError("write", temp);
      ::close(fd);
      ::unlink(temp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoError("fsync", temp);
    ::close(fd);
    ::unlink(temp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("rename onto", path);
    ::unlink(temp.c_str());
    return s;
  }
  return SyncDirectory(fs::path(path).parent_path().string());
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the jobs directory '", root, "': ", ec.message()));
  }
  return std::unique_ptr<JobStore>(new JobStore(root));
}

std::string JobStore::JobDir(const std::string& id) const { return absl::StrCat(root_, "/", id); }

std::string JobStore::CheckpointDir(const std::string& id) const {
  return absl::StrCat(JobDir(id), "/checkpoints");
}

absl::Status JobStore::Save(const v1::Job& job) const {
  const std::string dir = JobDir(job.id());
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("create '", dir, "': ", ec.message()));
    // The new directory entry must survive a crash too, or the job would vanish with it.
    BITLOOM_RETURN_IF_ERROR(SyncDirectory(root_));
  }
  std::string bytes;
  if (!job.SerializeToString(&bytes)) return absl::InternalError("cannot serialize a job record");
  return WriteFileAtomically(absl::StrCat(dir, "/", kJobFile), bytes);
}

std::vector<v1::Job> JobStore::LoadAll() const {
  std::vector<v1::Job> jobs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    if (!entry.is_directory()) continue;
    const std::string path = (entry.path() / kJobFile).string();
    auto bytes = ReadFile(path);
    v1::Job job;
    if (!bytes.ok() || !job.ParseFromString(*bytes) || job.id() != entry.path().filename().string()) {
      BITLOOM_LOG(WARNING) << "skipping unreadable job record " << path;
      continue;
    }
    jobs.push_back(std::move(job));
  }
  if (ec) BITLOOM_LOG(WARNING) << "listing " << root_ << ": " << ec.message();
  return jobs;
}

absl::Status JobStore::RecordTempArtifact(const std::string& id,
                                          const std::string& temp_path) const {
  return WriteFileAtomically(absl::StrCat(JobDir(id), "/", kTempRecordFile), temp_path);
}

void JobStore::ForgetTempArtifact(const std::string& id) const {
  ::unlink(absl::StrCat(JobDir(id), "/", kTempRecordFile).c_str());
}

absl::Status JobStore::RemoveTempArtifact(const std::string& id) const {
  const std::string record = absl::StrCat(JobDir(id), "/", kTempRecordFile);
  if (auto temp = ReadFile(record); temp.ok() && !temp->empty()) {
    if (::unlink(temp->c_str()) != 0 && errno != ENOENT) {
      return ErrnoError("remove the temporary artifact", *temp);
    }
  }
  ::unlink(record.c_str());
  return absl::OkStatus();
}

absl::Status JobStore::RemoveWorkFiles(const std::string& id) const {
  BITLOOM_RETURN_IF_ERROR(RemoveTempArtifact(id));
  std::error_code ec;
  fs::remove_all(CheckpointDir(id), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("remove checkpoints '", CheckpointDir(id), "': ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace bitloom::quantd
