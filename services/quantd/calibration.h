// Calibration tokens of a quantization job: CalibrationOptions + the source model -> the
// [rows · tokens_per_row] token ids QuantizationPipeline runs through the model.
//
// Sources, by the request:
//   - corpus_files: the files are tokenized with the model's own tokenizer and concatenated; row r
//     starts at an offset drawn from SplitMix64(seed, r), so rows sample the whole corpus and the
//     same seed gives the same rows. A corpus shorter than a row is repeated.
//   - neither corpus nor self_generated: uniformly random token ids from the seed. This stands in
//     for the built-in corpus until one ships with quantd; the pipeline still gets real Hessians of
//     the model's activations, only on less natural text.
//   - self_generated needs the engine's sampler, which quantd does not drive yet: CreateJob refuses
//     it (ValidateCalibrationSupported).
// Pure functions of their inputs, so a resumed job rebuilds exactly the same calibration.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::quantd {

inline constexpr uint32_t kDefaultCalibrationRows = 128;
inline constexpr uint32_t kDefaultTokensPerRow = 2048;

struct CalibrationShape {
  int64_t rows = 0;
  int64_t tokens_per_row = 0;
  int64_t tokens() const { return rows * tokens_per_row; }
};

// Applies the documented defaults (rows 0 -> 128, tokens_per_row 0 -> 2048) and caps a row at the
// model's context length, which is the longest sequence the model was trained to attend over.
CalibrationShape ResolveCalibrationShape(const v1::CalibrationOptions& options,
                                         const v1::ModelConfig& config);

// INVALID_ARGUMENT for what this build cannot calibrate on (self_generated), and for corpus files
// that are empty or not UTF-8 text (the message names calibration.corpus_files[i]). Reads the files.
absl::Status ValidateCalibrationSupported(const v1::CalibrationOptions& options);

absl::StatusOr<std::vector<int32_t>> BuildCalibrationTokens(const v1::CreateJobRequest& request,
                                                            const formats::Checkpoint& checkpoint,
                                                            const CalibrationShape& shape);

// SplitMix64 step (docs/QUANTIZATION.md, section 3): the seed-derived sequence used for row
// offsets and random tokens.
uint64_t SplitMix64(uint64_t& state);

}  // namespace bitloom::quantd
