// OpenCheckpoint's dispatch and the Checkpoint methods with a generic implementation.
#include "bitloom/formats/checkpoint.h"

#include <sys/stat.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "bitloom/core/mapped_file.h"
#include "bitloom/core/status_macros.h"
#include "gguf_checkpoint.h"
#include "hf_checkpoint.h"

namespace bitloom::formats {

absl::Status Checkpoint::ReadF32Into(const std::string& name, absl::Span<float> out) const {
  BITLOOM_ASSIGN_OR_RETURN(std::vector<float> values, ReadF32(name));
  if (values.size() != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has ", values.size(),
                                                   " values, output holds ", out.size()));
  }
  std::memcpy(out.data(), values.data(), values.size() * sizeof(float));
  return absl::OkStatus();
}

const CheckpointTensor* Checkpoint::FindTensor(const std::string& name) const {
  for (const CheckpointTensor& t : tensors()) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<std::string> Checkpoint::ComputeDigest() const {
  return absl::UnimplementedError("this checkpoint cannot compute a digest");
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenCheckpoint(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "': ", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return OpenHfCheckpoint(path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint '", path, "' is neither a directory nor a regular file"));
  }
  // Decide by content, not by name: a GGUF file starts with "GGUF".
  BITLOOM_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  if (file.size() >= 4 && std::memcmp(file.bytes().data(), "GGUF", 4) == 0) {
    return OpenGgufCheckpoint(path);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "checkpoint '", path,
      "' is not a GGUF file (no GGUF magic); pass a Hugging Face directory or a .gguf file"));
}

}  // namespace bitloom::formats
