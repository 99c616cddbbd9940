// Calibration tokens of a quantization job: CalibrationOptions + the source model -> the
// [rows · tokens_per_row] token ids QuantizationPipeline runs through the model.
//
// Sources, by the request:
//   - corpus_files: the files are tokenized with the model's own tokenizer and concatenated; row r
//     starts at an offset drawn from SplitMix64(seed, r), so rows sample the whole corpus and the
//     same seed gives the same rows. A corpus shorter than a row is repeated.
//   - self_generated: the full-precision model samples the rows itself from BOS at temperature 1
//     (self_generated_calibration.h), on the CPU engine, in parallel over the job's pool.
//   - neither: uniformly random token ids from the seed. This stands in for the built-in corpus
//     until one ships with quantd; the pipeline still gets real Hessians of the model's
//     activations, only on less natural text.
// random_rows_fraction then replaces round(fraction · rows) rows, at seed-chosen positions, with
// uniformly random ids (MixRandomRows); the other rows keep the source's rows in order.
// Every function is a pure function of its inputs (the thread count included), so a resumed job
// rebuilds exactly the same calibration. docs/QUANTIZATION.md ("Calibration data") has the defaults
// and the seed streams.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/v1/quantization.pb.h"

namespace bitloom::quantd {

// Default shapes (rows or tokens_per_row 0). A row is at most the model's context; rows 0 means as
// many rows of the resolved length as reach the token budget (at most kMaxCalibrationRows), so a
// short-context model gets more, shorter rows and the same number of tokens. Self-generated rows
// are sampled token by token on the CPU, so their budget is an eighth of a corpus's: 64 rows of
// 512.
inline constexpr uint32_t kDefaultTokensPerRow = 2048;
inline constexpr int64_t kDefaultCalibrationTokens = 128 * 2048;
inline constexpr uint32_t kDefaultSelfGeneratedTokensPerRow = 512;
inline constexpr int64_t kDefaultSelfGeneratedTokens = 64 * 512;

struct CalibrationShape {
  int64_t rows = 0;
  int64_t tokens_per_row = 0;
  int64_t tokens() const { return rows * tokens_per_row; }
};

// The request's shape with the defaults above applied and a row capped at the model's context
// length (max_position_embeddings, when the config gives one), the longest sequence the model was
// trained to attend over.
CalibrationShape ResolveCalibrationShape(const v1::CalibrationOptions& options,
                                         const v1::ModelConfig& config);

// INVALID_ARGUMENT for corpus files that are empty or not UTF-8 text (the message names
// calibration.corpus_files[i]). Reads the files.
absl::Status ValidateCalibrationSupported(const v1::CalibrationOptions& options);

// How BuildCalibrationTokens runs. Only self-generated rows use it; the other sources take
// moments.
struct CalibrationRun {
  ThreadPool* pool = nullptr;               // self-generated rows sample in parallel on it
  const std::atomic<bool>* stop = nullptr;  // CANCELLED soon after it turns true; may be null
  // Share of the calibration built, 0..1. Calls are serialised but may come from pool threads.
  std::function<void(double fraction)> on_progress;
};

absl::StatusOr<std::vector<int32_t>> BuildCalibrationTokens(const v1::CreateJobRequest& request,
                                                            const formats::Checkpoint& checkpoint,
                                                            const CalibrationShape& shape,
                                                            const CalibrationRun& run = {});

// Random-row mixing. RandomRowCount is round(fraction · rows) (halves away from zero).
// RandomRowPositions marks which rows are random: the first RandomRowCount entries of a
// Fisher-Yates shuffle of 0..rows-1 driven by SplitMix64 from seed ^ kRandomRowPositionsSalt.
// MixRandomRows lays `source` (rows - RandomRowCount rows of tokens_per_row, in order) over the
// unmarked rows and fills the marked ones with ids uniform in [0, vocab), drawn row by row from
// SplitMix64 seeded with seed ^ kRandomRowTokensSalt.
int64_t RandomRowCount(int64_t rows, double fraction);
std::vector<bool> RandomRowPositions(int64_t rows, double fraction, uint64_t seed);
std::vector<int32_t> MixRandomRows(absl::Span<const int32_t> source, const CalibrationShape& shape,
                                   double fraction, uint64_t vocab, uint64_t seed);

inline constexpr uint64_t kRandomRowPositionsSalt = 0xA11C'E5E1'EC7E'D000ull;
inline constexpr uint64_t kRandomRowTokensSalt = 0x0DD5'70CE'4E1D'5000ull;

// SplitMix64 step (docs/QUANTIZATION.md, section 3): the seed-derived sequence used for row
// offsets and random tokens.
uint64_t SplitMix64(uint64_t& state);

}  // namespace bitloom::quantd
