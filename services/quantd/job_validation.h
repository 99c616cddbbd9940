// Validation of CreateJobRequest: every field against its documented limit, with a message that
// names the field and the limit. Pure (no filesystem access beyond the existence checks that
// ValidateJobSources does), so the rules are tested on their own.
#pragma once

#include "absl/status/status.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::quantd {

inline constexpr double kMinTargetBits = 1.5;
inline constexpr double kMaxTargetBits = 8.0;
inline constexpr double kMinHeadBits = 2.0;
inline constexpr double kMaxHeadBits = 16.0;
inline constexpr uint32_t kMaxCalibrationRows = 4096;
inline constexpr uint32_t kMinTokensPerRow = 16;
inline constexpr uint32_t kMaxTokensPerRow = 32768;
inline constexpr int kMaxCorpusFiles = 64;
inline constexpr size_t kMaxPathBytes = 4096;

// Checks field ranges and formats (INVALID_ARGUMENT).
absl::Status ValidateCreateJobRequest(const v1::CreateJobRequest& request);

// Checks that the source model and corpus files exist (NOT_FOUND) and are the right kind of file
// (INVALID_ARGUMENT).
absl::Status ValidateJobSources(const v1::CreateJobRequest& request);

}  // namespace bitloom::quantd
