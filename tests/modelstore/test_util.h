// Helpers shared by the modelstore tests: a scratch directory, whole-file I/O, a small reference
// artifact, and surgery on an artifact's header and manifest that keeps its checksums valid (so a
// test can reach the checks behind them).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/modelstore/format.h"
#include "bitloom/v1/manifest.pb.h"
#include "gtest/gtest.h"

namespace bitloom::modelstore::testing {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/modelstore_test.XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr) << std::strerror(errno);
    path_ = buf.data();
  }
  ~ScratchDir() { RemoveTree(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  static void RemoveTree(const std::string& path) {
    if (DIR* d = ::opendir(path.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        const std::string child = path + "/" + n;
        struct stat st {};
        if (::lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
          RemoveTree(child);
        } else {
          ::unlink(child.c_str());
        }
      }
      ::closedir(d);
    }
    ::rmdir(path.c_str());
  }

  std::string path_;
};

inline std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Replaces `path` by a new file holding `bytes`. Unlinking first (rather than O_TRUNC) keeps ext4's
// replace-by-truncate heuristic from flushing on every close, which made the mutation loop slow.
inline void WriteFileBytes(const std::string& path, absl::Span<const uint8_t> bytes) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    ASSERT_GT(n, 0) << std::strerror(errno);
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

inline std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  return names;
}

// Deterministic, distinct-per-seed bytes.
inline std::vector<uint8_t> PatternBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<uint8_t>(x);
  }
  return out;
}

inline v1::TensorEntry Meta(const std::string& name, v1::Codec codec,
                            std::initializer_list<uint64_t> shape) {
  v1::TensorEntry e;
  e.set_name(name);
  e.set_codec(codec);
  for (uint64_t d : shape) e.add_shape(d);
  return e;
}

inline v1::ArtifactManifest BaseManifest(const std::string& tag = "test") {
  v1::ArtifactManifest m;
  m.mutable_config()->set_architecture("llama");
  m.mutable_config()->set_hidden_size(8);
  m.set_quantizer_version(tag);
  m.set_bits_per_weight(16);
  m.set_chat_template("{{ messages }}");
  return m;
}

// A small artifact with three dense tensors and one of a codec whose size the format does not fix;
// blobs are tiny so the file is mostly padding, which the random-corruption test accounts for.
inline void WriteSmallArtifact(const std::string& path, const std::string& temp_dir,
                               uint32_t seed = 1) {
  auto writer = ArtifactWriter::Create(path, temp_dir);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE(
      (*writer)->AddTensor(Meta("a.f32", v1::CODEC_F32, {3, 5}), PatternBytes(60, seed)).ok());
  ASSERT_TRUE(
      (*writer)->AddTensor(Meta("b.f16", v1::CODEC_F16, {7}), PatternBytes(14, seed + 1)).ok());
  ASSERT_TRUE((*writer)
                  ->AddTensor(Meta("c.bf16", v1::CODEC_BF16, {2, 2, 2}), PatternBytes(16, seed + 2))
                  .ok());
  v1::TensorEntry q = Meta("d.q", v1::CODEC_HADAMARD_SCALAR, {4, 8});
  q.set_bits_per_weight(4);
  q.set_group_size(8);
  ASSERT_TRUE((*writer)->AddTensor(q, PatternBytes(24, seed + 3)).ok());
  ASSERT_TRUE((*writer)->Finish(BaseManifest()).ok());
}

// Re-encodes the header of `file` after `edit`, with a correct header checksum.
inline void EditHeader(std::vector<uint8_t>& file, const std::function<void(FileHeader&)>& edit) {
  auto header = DecodeHeader(file);
  ASSERT_TRUE(header.ok()) << header.status();
  edit(*header);
  const auto encoded = EncodeHeader(*header);
  std::copy(encoded.begin(), encoded.end(), file.begin());
}

// Replaces the manifest of `file` by `edit`ed copy, fixing manifest size/checksum, file size and
// the header checksum, so only the edited content can make the reader complain.
inline void EditManifest(std::vector<uint8_t>& file,
                         const std::function<void(v1::ArtifactManifest&)>& edit) {
  auto header = DecodeHeader(file);
  ASSERT_TRUE(header.ok()) << header.status();
  v1::ArtifactManifest m;
  ASSERT_TRUE(m.ParseFromArray(file.data() + header->manifest_offset,
                               static_cast<int>(header->manifest_size)));
  edit(m);
  const std::string bytes = m.SerializeAsString();
  file.resize(header->manifest_offset);
  file.insert(file.end(), bytes.begin(), bytes.end());
  header->manifest_size = bytes.size();
  header->manifest_xxh3 =
      Xxh3(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  header->file_size = file.size();
  const auto encoded = EncodeHeader(*header);
  std::copy(encoded.begin(), encoded.end(), file.begin());
}

}  // namespace bitloom::modelstore::testing
