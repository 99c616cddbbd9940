// Self-generated calibration: token rows that the full-precision source model samples itself, for a
// quantization job with calibration.self_generated and no corpus.
//
// Row k starts with the model's BOS id (the first of ModelConfig.bos_token_ids), or, for a model
// without one, a token id drawn from the row's seed; every later token is sampled from the model at
// temperature 1 with nothing masked (no top-k, top-p, min-p or penalties), so the rows follow the
// model's own distribution of text. EOS does not end a row: the model samples on after it, as after
// a document boundary in its training data. Row k's sampler is seeded with
// SelfGeneratedRowSeed(seed, k), and a row is computed by one thread whatever the pool, so the same
// job seed gives the same rows on any machine and thread count: a resumed job rebuilds exactly the
// calibration it had.
//
// The CPU engine decodes one sequence per KvCache (DecoderModel has no batched decode over several
// caches), so rows run in parallel on the pool, each row's decode on a single thread. The model
// must therefore be loaded without a pool (DecoderModel::Load(..., nullptr)): a model that spreads
// its own kernels over the pool its rows run on would wait on itself.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/decoder_model.h"

namespace bitloom::quantd {

struct SelfGeneratedRowsOptions {
  int64_t rows = 0;
  int64_t tokens_per_row = 0;  // ≥ 1, BOS included; at most the model's context
  uint64_t seed = 0;           // the job's seed
  ThreadPool* pool = nullptr;  // rows in parallel on it; null: one after another on the caller
  // Checked before every sampled token: CANCELLED soon after it turns true. May be null.
  const std::atomic<bool>* stop = nullptr;
  // Tokens of all rows sampled so far, every 64 tokens of a row and when a row ends. Calls are
  // serialised but may come from any pool thread. May be empty.
  std::function<void(int64_t tokens_done)> on_tokens;
};

// [rows · tokens_per_row] ids, row-major. INVALID_ARGUMENT for a shape the model cannot hold (a row
// longer than its context); CANCELLED when `stop` turned true.
absl::StatusOr<std::vector<int32_t>> SampleCalibrationRows(const engine::DecoderModel& model,
                                                           const SelfGeneratedRowsOptions& options);

// The sampler seed of self-generated row `row`: output number `row` (0-based) of SplitMix64 with
// its state initialised to seed ^ kSelfGeneratedSeedSalt (1 in the 2^-64 case that this is 0, which
// the engine's sampler would take as "pick a random seed").
uint64_t SelfGeneratedRowSeed(uint64_t seed, int64_t row);

inline constexpr uint64_t kSelfGeneratedSeedSalt = 0x5E1F'6E4E'7A7E'D000ull;

}  // namespace bitloom::quantd
