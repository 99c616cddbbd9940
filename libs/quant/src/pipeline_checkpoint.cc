#include "pipeline_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace bitloom::quant::internal {
namespace {

constexpr char kMagic[8] = {'B', 'L', 'Q', 'C', 'K', 'P', 'T', '1'};

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

uint64_t Fnv1a64(const void* data, size_t size, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

bool ByteReader::Raw(void* p, size_t n) {
  if (!ok_ || data_.size() - pos_ < n) return ok_ = false;
  std::memcpy(p, data_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::Str(std::string* s) {
  uint64_t n = 0;
  if (!U64(&n) || data_.size() - pos_ < n) return ok_ = false;
  s->assign(data_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::Floats(std::vector<float>* v) {
  uint64_t n = 0;
  if (!U64(&n) || n % sizeof(float) != 0 || data_.size() - pos_ < n) return ok_ = false;
  v->resize(n / sizeof(float));
  std::memcpy(v->data(), data_.data() + pos_, n);
  pos_ += n;
  return true;
}

absl::Status WriteCheckpointFile(const std::string& path, uint64_t fingerprint,
                                 const std::string& payload) {
  std::string out(kMagic, sizeof(kMagic));
  const uint64_t size = payload.size();
  const uint64_t sum = Fnv1a64(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(&fingerprint), 8);
  out.append(reinterpret_cast<const char*>(&size), 8);
  out += payload;
  out.append(reinterpret_cast<const char*>(&sum), 8);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open", tmp);
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return Errno("write", tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Errno("fsync", tmp);
  }
  if (::close(fd) != 0) return Errno("close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename", tmp);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCheckpointFile(const std::string& path, uint64_t fingerprint) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, " is absent"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  const auto damaged = [&] { return absl::NotFoundError(absl::StrCat(path, " is damaged")); };
  if (all.size() < 32 || std::memcmp(all.data(), kMagic, 8) != 0) return damaged();
  uint64_t fp = 0, size = 0, sum = 0;
  std::memcpy(&fp, all.data() + 8, 8);
  std::memcpy(&size, all.data() + 16, 8);
  if (size != all.size() - 32) return damaged();
  std::memcpy(&sum, all.data() + 24 + size, 8);
  if (sum != Fnv1a64(all.data() + 24, size)) return damaged();
  if (fp != fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     " belongs to a different job (settings or calibration differ); use a fresh "
                     "checkpoint directory"));
  }
  return all.substr(24, size);
}

}  // namespace bitloom::quant::internal
