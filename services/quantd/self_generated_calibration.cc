#include "self_generated_calibration.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/generate.h"
#include "bitloom/engine/generation_params.h"
#include "calibration.h"

namespace bitloom::quantd {
namespace {

// How often a row reports its tokens: often enough for a smooth progress bar on a large model (a
// token there takes seconds), rarely enough that the shared lock never matters on a small one.
constexpr int64_t kReportEveryTokens = 64;

// The state the workers share: the first error, and the serialised progress report.
class RowsProgress {
 public:
  explicit RowsProgress(const SelfGeneratedRowsOptions& options) : options_(options) {}

  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void Fail(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok()) status_ = std::move(status);
    failed_.store(true, std::memory_order_relaxed);
  }
  absl::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  void Add(int64_t tokens) {
    if (tokens == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    done_ += tokens;
    if (options_.on_tokens) options_.on_tokens(done_);
  }

 private:
  const SelfGeneratedRowsOptions& options_;
  mutable std::mutex mu_;
  absl::Status status_;
  std::atomic<bool> failed_{false};
  int64_t done_ = 0;
};

// Samples row `row` into `out` [tokens_per_row]. Runs on one thread: the model has no pool.
absl::Status SampleRow(const engine::DecoderModel& model, const SelfGeneratedRowsOptions& options,
                       int64_t row, int32_t* out, RowsProgress& progress) {
  const auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  if (stopped()) return absl::CancelledError("stopped while generating calibration rows");
  const uint64_t seed = SelfGeneratedRowSeed(options.seed, row);
  const auto& bos = model.config().bos_token_ids();
  if (!bos.empty() && bos[0] < static_cast<uint32_t>(model.vocab_size())) {
    out[0] = static_cast<int32_t>(bos[0]);
  } else {
    uint64_t state = seed;
    out[0] = static_cast<int32_t>(SplitMix64(state) % static_cast<uint64_t>(model.vocab_size()));
  }
  if (options.tokens_per_row == 1) {
    progress.Add(1);
    return absl::OkStatus();
  }
  engine::GenerationParams params;
  params.temperature = 1.0f;
  params.seed = seed;
  params.ignore_eos = true;
  params.max_new_tokens = static_cast<uint32_t>(options.tokens_per_row - 1);
  engine::GenerateOptions generate;
  generate.context_length = static_cast<int>(options.tokens_per_row);
  int64_t written = 1, reported = 0;
  generate.on_token = [&](const engine::GeneratedToken& token) {
    out[written++] = token.id;
    if (written - reported >= kReportEveryTokens) {
      progress.Add(written - reported);
      reported = written;
    }
    return !stopped() && !progress.failed();
  };
  absl::StatusOr<engine::GenerationResult> result =
      engine::Generate(model, absl::MakeConstSpan(out, 1), params, generate);
  if (!result.ok()) {
    return absl::Status(result.status().code(), absl::StrCat("self-generated calibration row ", row,
                                                             ": ", result.status().message()));
  }
  if (result->finish_reason == engine::FinishReason::kCancelled) {
    return stopped() ? absl::CancelledError("stopped while generating calibration rows")
                     : absl::OkStatus();  // another row failed; its error is the one reported
  }
  if (written != options.tokens_per_row) {
    return absl::InternalError(absl::StrCat("self-generated calibration row ", row, ": ", written,
                                            " tokens of ", options.tokens_per_row));
  }
  progress.Add(written - reported);
  return absl::OkStatus();
}

}  // namespace

uint64_t SelfGeneratedRowSeed(uint64_t seed, int64_t row) {
  // SplitMix64's state advances by a constant, so output `row` needs no loop over the rows before
  // it.
  uint64_t state =
      (seed ^ kSelfGeneratedSeedSalt) + static_cast<uint64_t>(row) * 0x9E3779B97F4A7C15ull;
  const uint64_t out = SplitMix64(state);
  return out != 0 ? out : 1;
}

absl::StatusOr<std::vector<int32_t>> SampleCalibrationRows(
    const engine::DecoderModel& model, const SelfGeneratedRowsOptions& options) {
  if (options.rows < 0 || options.tokens_per_row < 1) {
    return absl::InvalidArgumentError(absl::StrCat("calibration: ", options.rows, " rows of ",
                                                   options.tokens_per_row, " tokens"));
  }
  const int64_t context = model.resolved().max_position_embeddings;
  if (context > 0 && options.tokens_per_row > context) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration.tokens_per_row: ", options.tokens_per_row,
                     " is longer than the model's context of ", context, " tokens"));
  }
  if (model.vocab_size() <= 0)
    return absl::InvalidArgumentError("source: the model's vocab_size is 0");
  std::vector<int32_t> out(static_cast<size_t>(options.rows * options.tokens_per_row));
  RowsProgress progress(options);
  // Rows are handed out one at a time from a shared counter, so a thread that finishes early takes
  // the next row instead of idling behind a precomputed share.
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t row = next++; row < options.rows && !progress.failed(); row = next++) {
      absl::Status s =
          SampleRow(model, options, row, out.data() + row * options.tokens_per_row, progress);
      if (!s.ok()) progress.Fail(std::move(s));
    }
  };
  const size_t workers =
      options.pool == nullptr
          ? 1
          : std::min<size_t>(static_cast<size_t>(options.rows), options.pool->num_threads() + 1);
  if (workers > 1) {
    options.pool->ParallelFor(0, workers, [&](size_t begin, size_t end) {
      for (size_t w = begin; w < end; ++w) work();
    });
  } else {
    work();
  }
  BITLOOM_RETURN_IF_ERROR(progress.status());
  return out;
}

}  // namespace bitloom::quantd
