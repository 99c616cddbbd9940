#include "bitloom/modelstore/model_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/format.h"
#include "file_util.h"

namespace bitloom::modelstore {
namespace {

// mkdir that accepts an existing directory but not an existing non-directory.
absl::Status EnsureDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return internal::ErrnoToStatus(errno, absl::StrCat("mkdir ", path));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return internal::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// The names in `dir`, without "." and "..". Stops at the first readdir error.
absl::StatusOr<std::vector<std::string>> ReadDirectory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return internal::ErrnoToStatus(errno, absl::StrCat("opendir ", dir));
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const absl::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return internal::ErrnoToStatus(err, absl::StrCat("readdir ", dir));
  return names;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Open(const std::string& root,
                                                             StoreOptions options) {
  if (root.empty()) return absl::InvalidArgumentError("store root is empty");
  std::string clean_root = root;
  while (clean_root.size() > 1 && clean_root.back() == '/') clean_root.pop_back();
  BITLOOM_RETURN_IF_ERROR(EnsureDirectory(clean_root));
  std::string temp_dir = absl::StrCat(clean_root, "/", kTempDirName);
  BITLOOM_RETURN_IF_ERROR(EnsureDirectory(temp_dir));
  std::unique_ptr<ModelStore> store(new ModelStore(std::move(clean_root), std::move(temp_dir)));
  if (options.stale_temp_age > absl::ZeroDuration()) {
    store->RemoveStaleTempFiles(options.stale_temp_age);
  }
  return store;
}

void ModelStore::RemoveStaleTempFiles(absl::Duration age) const {
  absl::StatusOr<std::vector<std::string>> names = ReadDirectory(temp_dir_);
  if (!names.ok()) {
    BITLOOM_LOG(WARNING) << "model store: cannot sweep temp files: " << names.status();
    return;
  }
  const absl::Time cutoff = absl::Now() - age;
  for (const std::string& n : *names) {
    const std::string path = absl::StrCat(temp_dir_, "/", n);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (absl::FromTimeT(st.st_mtime) >= cutoff) continue;
    if (::unlink(path.c_str()) == 0) {
      BITLOOM_LOG(INFO) << "model store: removed stale temp file " << path;
    } else if (errno != ENOENT) {
      BITLOOM_LOG(WARNING) << "model store: cannot remove stale temp file " << path;
    }
  }
}

absl::Status ModelStore::ValidateArtifactName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: must be 1 to ", kMaxNameLength, " characters long, got ", name.size()));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      // Report the byte in hex: it may be a control character or part of a UTF-8 sequence.
      return absl::InvalidArgumentError(
          absl::StrCat("name: may contain only A-Z, a-z, 0-9, '.', '_' and '-'; found byte 0x",
                       absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2)));
    }
  }
  if (name.front() == '.') {
    return absl::InvalidArgumentError("name: must not start with '.'");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelStore::PathOf(absl::string_view name) const {
  BITLOOM_RETURN_IF_ERROR(ValidateArtifactName(name));
  return absl::StrCat(root_, "/", name, kArtifactSuffix);
}

absl::StatusOr<std::unique_ptr<ArtifactWriter>> ModelStore::NewWriter(absl::string_view name,
                                                                      bool overwrite) const {
  BITLOOM_ASSIGN_OR_RETURN(std::string path, PathOf(name));
  // An early answer for the common case; Publish() decides atomically.
  if (!overwrite && ::access(path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("artifact '", name, "' already exists"));
  }
  WriterOptions options;
  options.replace_existing = overwrite;
  options.artifact_name = std::string(name);
  return ArtifactWriter::Create(path, temp_dir_, std::move(options));
}

v1::ArtifactSummary ModelStore::Summarize(absl::string_view name, const ArtifactReader& reader) {
  const v1::ArtifactManifest& m = reader.manifest();
  v1::ArtifactSummary s;
  s.set_name(std::string(name));
  s.set_size_bytes(reader.file_size());
  s.set_architecture(m.config().architecture());
  s.set_bits_per_weight(m.bits_per_weight());
  s.set_num_tensors(static_cast<uint32_t>(m.tensors_size()));
  s.set_created_unix_ms(m.created_unix_ms());
  s.set_format_version(reader.header().format_version);
  return s;
}

absl::StatusOr<std::vector<v1::ArtifactSummary>> ModelStore::List() const {
  BITLOOM_ASSIGN_OR_RETURN(std::vector<std::string> entries, ReadDirectory(root_));
  std::vector<v1::ArtifactSummary> out;
  for (const std::string& entry : entries) {
    if (!absl::EndsWith(entry, kArtifactSuffix)) continue;
    const absl::string_view name =
        absl::string_view(entry).substr(0, entry.size() - kArtifactSuffix.size());
    // Temp files start with '.', so this also keeps them out even if they were in the root.
    if (!ValidateArtifactName(name).ok()) continue;
    const std::string path = absl::StrCat(root_, "/", entry);
    // Opening a FIFO or device would block or misbehave; only regular files (or links to them) can
    // be artifacts.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // deleted meanwhile
    if (!S_ISREG(st.st_mode)) {
      BITLOOM_LOG(WARNING) << "model store: skipping '" << entry << "': not a regular file";
      continue;
    }
    absl::StatusOr<std::unique_ptr<ArtifactReader>> reader = ArtifactReader::Open(path);
    if (!reader.ok()) {
      // Deleted between readdir and open: not an error, just gone.
      if (!absl::IsNotFound(reader.status())) {
        BITLOOM_LOG(WARNING) << "model store: skipping unreadable artifact '" << name
                             << "': " << reader.status();
      }
      continue;
    }
    out.push_back(Summarize(name, **reader));
  }
  std::sort(out.begin(), out.end(), [](const v1::ArtifactSummary& a, const v1::ArtifactSummary& b) {
    return a.name() < b.name();
  });
  return out;
}

absl::StatusOr<std::unique_ptr<ArtifactReader>> ModelStore::OpenReader(
    absl::string_view name, ReaderOptions options) const {
  BITLOOM_ASSIGN_OR_RETURN(std::string path, PathOf(name));
  absl::StatusOr<std::unique_ptr<ArtifactReader>> reader = ArtifactReader::Open(path, options);
  if (absl::IsNotFound(reader.status())) {
    return absl::NotFoundError(absl::StrCat("artifact '", name, "' not found in ", root_));
  }
  return reader;
}

absl::StatusOr<ArtifactDescription> ModelStore::Describe(absl::string_view name,
                                                         bool verify_checksums) const {
  ReaderOptions options;
  options.verify_checksums = verify_checksums;
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<ArtifactReader> reader, OpenReader(name, options));
  ArtifactDescription d;
  d.summary = Summarize(name, *reader);
  d.manifest = reader->manifest();
  return d;
}

absl::Status ModelStore::Delete(absl::string_view name) const {
  BITLOOM_ASSIGN_OR_RETURN(std::string path, PathOf(name));
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("artifact '", name, "' not found in ", root_));
    }
    return internal::ErrnoToStatus(errno, absl::StrCat("unlink ", path));
  }
  // Make the removal durable, so a deleted artifact does not reappear after a crash.
  return internal::FsyncDirectory(root_);
}

}  // namespace bitloom::modelstore
