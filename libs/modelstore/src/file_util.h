// POSIX file helpers shared by the writer and the store: errno to Status, full writes, directory
// fsync. Private to libs/modelstore.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bitloom::modelstore::internal {

// Maps an errno value to the closest canonical code; the message reads "<what>: <strerror>".
absl::Status ErrnoToStatus(int err, const std::string& what);

// write(2) until all of `bytes` is written, retrying short writes and EINTR.
absl::Status WriteAll(int fd, absl::Span<const uint8_t> bytes, const std::string& path);
// pwrite(2) of all of `bytes` at `offset`, retrying short writes and EINTR.
absl::Status PWriteAll(int fd, absl::Span<const uint8_t> bytes, uint64_t offset,
                       const std::string& path);

// fsync(2) on a directory, so that a rename/link/unlink inside it survives a crash.
absl::Status FsyncDirectory(const std::string& dir);

// The directory part of `path` ("." when it has none).
std::string DirName(const std::string& path);
// The part of `path` after its last '/'.
std::string BaseName(const std::string& path);

}  // namespace bitloom::modelstore::internal
