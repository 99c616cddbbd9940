// The Hugging Face directory reader behind OpenCheckpoint (checkpoint.h). Private to libs/formats.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/formats/checkpoint.h"

namespace bitloom::formats {

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenHfCheckpoint(const std::string& dir);

}  // namespace bitloom::formats
