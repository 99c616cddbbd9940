#include "hf_checkpoint.h"
namespace bitloom::formats {
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& dir) {
  return absl::UnimplementedError(dir);
}
}  // namespace bitloom::formats
