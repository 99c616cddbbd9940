// A small artifact of dense tensors with awkward sizes (not multiples of 256 bytes, one of a single
// element, one larger than a staging chunk of the tests) for the weight-upload tests, written to a
// scratch directory that is removed with the object.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bitloom::engine {

class SyntheticArtifact {
 public:
  // Writes `<scratch>/model.bitloom` with `seed` deciding the bytes. Any error is returned.
  static absl::StatusOr<SyntheticArtifact> Create(uint64_t seed);

  SyntheticArtifact(SyntheticArtifact&& other) noexcept;
  SyntheticArtifact& operator=(SyntheticArtifact&&) = delete;
  SyntheticArtifact(const SyntheticArtifact&) = delete;
  ~SyntheticArtifact();

  const std::string& path() const { return path_; }
  // Tensor names in the order they were written.
  const std::vector<std::string>& names() const { return names_; }

 private:
  SyntheticArtifact() = default;

  std::string dir_;
  std::string path_;
  std::vector<std::string> names_;
};

}  // namespace bitloom::engine
