#include "bitloom/modelstore/artifact_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/codec_layout.h"
#include "bitloom/modelstore/format.h"
#include "file_util.h"
#include "xxh3_stream.h"

namespace bitloom::modelstore {
namespace {

constexpr uint64_t kNoFixedSize = UINT64_MAX;

// A random suffix for temp names. O_EXCL makes collisions harmless; randomness makes them rare so
// that concurrent writers (threads or processes) rarely need to retry.
std::string RandomSuffix() {
  thread_local std::mt19937_64 rng{
      std::random_device{}() ^ (static_cast<uint64_t>(::getpid()) << 32) ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  return absl::StrCat(absl::Hex(rng(), absl::kZeroPad16));
}

uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactWriter>> ArtifactWriter::Create(
    const std::string& final_path, const std::string& temp_dir, WriterOptions options) {
  if (final_path.empty()) return absl::InvalidArgumentError("final_path is empty");
  if (temp_dir.empty()) return absl::InvalidArgumentError("temp_dir is empty");
  // A leading '.' keeps temp files hidden and never a valid artifact name, even when temp_dir is
  // the store root itself.
  const std::string base = internal::BaseName(final_path);
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string temp_path = absl::StrCat(temp_dir, "/.", base, ".", RandomSuffix(), ".tmp");
    const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return internal::ErrnoToStatus(errno, absl::StrCat("create ", temp_path));
    }
    std::unique_ptr<ArtifactWriter> writer(
        new ArtifactWriter(final_path, std::move(temp_path), fd, std::move(options)));
    // The header and its padding are written as zeros now and overwritten last, so that a crash
    // before Finish() leaves a file without a valid magic+checksum, which no reader accepts.
    const std::vector<uint8_t> zeros(kDataOffset, 0);
    BITLOOM_RETURN_IF_ERROR(writer->Write(zeros));
    return writer;
  }
  return absl::InternalError(absl::StrCat("could not create a unique temp file in ", temp_dir));
}

ArtifactWriter::ArtifactWriter(std::string final_path, std::string temp_path, int fd,
                               WriterOptions options)
    : final_path_(std::move(final_path)),
      temp_path_(std::move(temp_path)),
      fd_(fd),
      options_(std::move(options)),
      hasher_(std::make_unique<internal::Xxh3Stream>()) {}

ArtifactWriter::~ArtifactWriter() { Abort(); }

void ArtifactWriter::Abort() {
  if (finished_ || aborted_) return;
  aborted_ = true;
  if (error_.ok())
    error_ = absl::CancelledError(absl::StrCat("writer for ", final_path_, " was aborted"));
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
}

absl::Status ArtifactWriter::CheckUsable() const {
  if (!error_.ok()) return error_;
  if (finished_)
    return absl::FailedPreconditionError(
        absl::StrCat("writer for ", final_path_, " is already finished"));
  return absl::OkStatus();
}

absl::Status ArtifactWriter::Fail(absl::Status status) {
  if (error_.ok()) error_ = status;
  Abort();
  return status;
}

absl::Status ArtifactWriter::Write(absl::Span<const uint8_t> bytes) {
  absl::Status status = internal::WriteAll(fd_, bytes, temp_path_);
  if (!status.ok()) return Fail(std::move(status));
  position_ += bytes.size();
  return absl::OkStatus();
}

absl::Status ArtifactWriter::PadTo(uint64_t offset) {
  static const std::vector<uint8_t> kZeros(kBlobAlignment, 0);
  while (position_ < offset) {
    const uint64_t n = std::min<uint64_t>(offset - position_, kZeros.size());
    BITLOOM_RETURN_IF_ERROR(Write(absl::MakeConstSpan(kZeros.data(), n)));
  }
  return absl::OkStatus();
}

absl::Status ArtifactWriter::AddTensor(v1::TensorEntry meta, absl::Span<const uint8_t> bytes) {
  BITLOOM_RETURN_IF_ERROR(BeginTensor(std::move(meta)));
  BITLOOM_RETURN_IF_ERROR(AppendTensorData(bytes));
  return EndTensor();
}

absl::Status ArtifactWriter::BeginTensor(v1::TensorEntry meta) {
  BITLOOM_RETURN_IF_ERROR(CheckUsable());
  // Usage errors below do not fail the writer: the caller may correct them and go on.
  if (open_) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor '", current_.name(), "' is still open; call EndTensor first"));
  }
  if (meta.name().empty()) return absl::InvalidArgumentError("tensor name is empty");
  if (names_.contains(meta.name())) {
    return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", meta.name(), "'"));
  }
  absl::StatusOr<uint64_t> expected =
      ExpectedBlobSize(meta.codec(), absl::MakeConstSpan(meta.shape().data(), meta.shape().size()));
  if (absl::IsUnimplemented(expected.status())) {
    current_expected_ = kNoFixedSize;
  } else if (!expected.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", meta.name(), "': ", expected.status().message()));
  } else {
    current_expected_ = *expected;
  }
  BITLOOM_RETURN_IF_ERROR(PadTo(AlignUp(position_, kBlobAlignment)));
  current_ = std::move(meta);
  current_.set_offset(position_);
  current_.set_size(0);
  current_.set_xxh3(0);
  current_written_ = 0;
  hasher_->Reset();
  open_ = true;
  return absl::OkStatus();
}

absl::Status ArtifactWriter::AppendTensorData(absl::Span<const uint8_t> chunk) {
  BITLOOM_RETURN_IF_ERROR(CheckUsable());
  if (!open_) return absl::FailedPreconditionError("AppendTensorData without BeginTensor");
  if (current_expected_ != kNoFixedSize && chunk.size() > current_expected_ - current_written_) {
    // Fail the writer: bytes already written for this tensor cannot be taken back cleanly.
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "tensor '", current_.name(), "': ", CodecName(current_.codec()), " shape needs ",
        current_expected_, " bytes, got at least ", current_written_ + chunk.size())));
  }
  BITLOOM_RETURN_IF_ERROR(Write(chunk));
  hasher_->Update(chunk);
  current_written_ += chunk.size();
  return absl::OkStatus();
}

absl::Status ArtifactWriter::EndTensor() {
  BITLOOM_RETURN_IF_ERROR(CheckUsable());
  if (!open_) return absl::FailedPreconditionError("EndTensor without BeginTensor");
  if (current_expected_ != kNoFixedSize && current_written_ != current_expected_) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("tensor '", current_.name(), "': ", CodecName(current_.codec()),
                     " shape needs ", current_expected_, " bytes, got ", current_written_)));
  }
  current_.set_size(current_written_);
  current_.set_xxh3(hasher_->Digest());
  names_.insert(current_.name());
  tensors_.push_back(std::move(current_));
  current_ = v1::TensorEntry();
  open_ = false;
  return absl::OkStatus();
}

absl::Status ArtifactWriter::Finish(v1::ArtifactManifest manifest) {
  BITLOOM_RETURN_IF_ERROR(CheckUsable());
  if (open_) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor '", current_.name(), "' is still open; call EndTensor first"));
  }
  if (manifest.tensors_size() != 0) {
    return absl::InvalidArgumentError(
        "manifest.tensors must be empty: the writer fills the tensor table");
  }
  if (!options_.artifact_name.empty()) manifest.set_name(options_.artifact_name);
  if (manifest.created_unix_ms() == 0) {
    manifest.set_created_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  }
  for (v1::TensorEntry& entry : tensors_) *manifest.add_tensors() = std::move(entry);
  tensors_.clear();

  // Deterministic serialization (map fields in key order) so that the same inputs always give the
  // same bytes: a resumed quantization job must produce a bit-identical artifact.
  std::string serialized;
  bool serialized_ok = manifest.ByteSizeLong() <= kMaxManifestSize;
  if (serialized_ok) {
    google::protobuf::io::StringOutputStream stream(&serialized);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    serialized_ok = manifest.SerializeToCodedStream(&coded) && !coded.HadError();
  }
  if (!serialized_ok || serialized.size() > kMaxManifestSize) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("manifest does not serialize within ", kMaxManifestSize, " bytes")));
  }
  const auto manifest_bytes =
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(serialized.data()), serialized.size());

  FileHeader header;
  header.format_version = kFormatVersion;
  header.min_reader_version = kWrittenMinReaderVersion;
  header.data_offset = kDataOffset;
  header.manifest_offset = position_;
  header.manifest_size = manifest_bytes.size();
  header.manifest_xxh3 = Xxh3(manifest_bytes);
  header.file_size = position_ + manifest_bytes.size();
  BITLOOM_RETURN_IF_ERROR(Write(manifest_bytes));

  // The header goes last: a file whose header checksums is a file whose body was fully written.
  const std::array<uint8_t, kHeaderSize> encoded = EncodeHeader(header);
  if (absl::Status s = internal::PWriteAll(fd_, encoded, 0, temp_path_); !s.ok()) {
    return Fail(std::move(s));
  }
  if (::fsync(fd_) != 0) {
    return Fail(internal::ErrnoToStatus(errno, absl::StrCat("fsync ", temp_path_)));
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    return Fail(internal::ErrnoToStatus(errno, absl::StrCat("close ", temp_path_)));
  }
  fd_ = -1;
  BITLOOM_RETURN_IF_ERROR(Publish());
  finished_ = true;
  // The rename is durable only once the directory entry is: without this a crash could lose a
  // published artifact even though Finish() returned OK.
  absl::Status synced = internal::FsyncDirectory(internal::DirName(final_path_));
  if (!synced.ok()) {
    return absl::Status(synced.code(),
                        absl::StrCat(final_path_, " was published but may not survive a crash: ",
                                     synced.message()));
  }
  return absl::OkStatus();
}

absl::Status ArtifactWriter::Publish() {
  if (options_.replace_existing) {
    if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
      return Fail(
          internal::ErrnoToStatus(errno, absl::StrCat("rename ", temp_path_, " to ", final_path_)));
    }
    return absl::OkStatus();
  }
  // No-replace publishing must decide "does it exist?" and "put it there" in one atomic step, or
  // two racing writers could both see the name free and the later rename would silently replace the
  // earlier artifact. renameat2(RENAME_NOREPLACE) does that; filesystems without it get link(),
  // which fails with EEXIST just as atomically, followed by removing the temp name.
  if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, final_path_.c_str(), RENAME_NOREPLACE) ==
      0) {
    return absl::OkStatus();
  }
  int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
    if (::link(temp_path_.c_str(), final_path_.c_str()) == 0) {
      ::unlink(temp_path_.c_str());
      return absl::OkStatus();
    }
    err = errno;
  }
  if (err == EEXIST) {
    return Fail(absl::AlreadyExistsError(absl::StrCat(final_path_, " already exists")));
  }
  return Fail(
      internal::ErrnoToStatus(err, absl::StrCat("publish ", temp_path_, " as ", final_path_)));
}

}  // namespace bitloom::modelstore
