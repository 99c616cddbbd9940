// The GGUF reader behind OpenCheckpoint (checkpoint.h). Private to libs/formats.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/formats/checkpoint.h"

namespace bitloom::formats {

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenGgufCheckpoint(const std::string& path);

}  // namespace bitloom::formats
