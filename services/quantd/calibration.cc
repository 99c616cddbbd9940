#include "calibration.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/formats/tokenizer.h"
#include "job_validation.h"
#include "self_generated_calibration.h"

namespace bitloom::quantd {
namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::string& field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(field, ": cannot open '", path, "'"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): what the tokenizer accepts.
bool IsUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<size_t>(extra) >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

std::string CorpusField(int i) { return absl::StrCat("calibration.corpus_files[", i, "]"); }

}  // namespace

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

CalibrationShape ResolveCalibrationShape(const v1::CalibrationOptions& options,
                                         const v1::ModelConfig& config) {
  const bool self_generated = options.self_generated();
  CalibrationShape shape;
  shape.tokens_per_row = options.tokens_per_row() != 0 ? options.tokens_per_row()
                         : self_generated              ? kDefaultSelfGeneratedTokensPerRow
                                                       : kDefaultTokensPerRow;
  if (config.max_position_embeddings() > 0) {
    shape.tokens_per_row =
        std::min<int64_t>(shape.tokens_per_row, config.max_position_embeddings());
  }
  if (options.rows() != 0) {
    shape.rows = options.rows();
  } else {
    const int64_t budget = self_generated ? kDefaultSelfGeneratedTokens : kDefaultCalibrationTokens;
    shape.rows = std::clamp<int64_t>((budget + shape.tokens_per_row - 1) / shape.tokens_per_row, 1,
                                     kMaxCalibrationRows);
  }
  return shape;
}

absl::Status ValidateCalibrationSupported(const v1::CalibrationOptions& options) {
  for (int i = 0; i < options.corpus_files_size(); ++i) {
    BITLOOM_ASSIGN_OR_RETURN(std::string text,
                             ReadWholeFile(CorpusField(i), options.corpus_files(i)));
    if (text.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(CorpusField(i), ": '", options.corpus_files(i), "' is empty"));
    }
    if (!IsUtf8(text)) {
      return absl::InvalidArgumentError(
          absl::StrCat(CorpusField(i), ": '", options.corpus_files(i), "' is not UTF-8 text"));
    }
  }
  return absl::OkStatus();
}

int64_t RandomRowCount(int64_t rows, double fraction) {
  if (!(fraction > 0.0)) return 0;  // also NaN
  if (fraction >= 1.0) return rows;
  return std::clamp<int64_t>(std::llround(fraction * static_cast<double>(rows)), 0, rows);
}

std::vector<bool> RandomRowPositions(int64_t rows, double fraction, uint64_t seed) {
  std::vector<bool> random(static_cast<size_t>(rows), false);
  const int64_t count = RandomRowCount(rows, fraction);
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = seed ^ kRandomRowPositionsSalt;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = i + static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(rows - i));
    std::swap(order[i], order[j]);
    random[order[i]] = true;
  }
  return random;
}

std::vector<int32_t> MixRandomRows(absl::Span<const int32_t> source, const CalibrationShape& shape,
                                   double fraction, uint64_t vocab, uint64_t seed) {
  const std::vector<bool> random = RandomRowPositions(shape.rows, fraction, seed);
  std::vector<int32_t> out(static_cast<size_t>(shape.tokens()));
  uint64_t state = seed ^ kRandomRowTokensSalt;
  int64_t next_source = 0;
  for (int64_t r = 0; r < shape.rows; ++r) {
    int32_t* row = out.data() + r * shape.tokens_per_row;
    if (random[r]) {
      for (int64_t j = 0; j < shape.tokens_per_row; ++j) {
        row[j] = static_cast<int32_t>(SplitMix64(state) % vocab);
      }
    } else {
      std::copy_n(source.data() + next_source * shape.tokens_per_row, shape.tokens_per_row, row);
      ++next_source;
    }
  }
  return out;
}

namespace {

// `shape.rows` windows of the corpus files, tokenized and concatenated.
absl::StatusOr<std::vector<int32_t>> CorpusRows(const v1::CreateJobRequest& request,
                                                const formats::Checkpoint& checkpoint,
                                                const CalibrationShape& shape) {
  const v1::CalibrationOptions& options = request.calibration();
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<formats::Tokenizer> tokenizer,
                           formats::Tokenizer::FromSpec(checkpoint.tokenizer()));
  std::vector<int32_t> stream;
  for (int i = 0; i < options.corpus_files_size(); ++i) {
    BITLOOM_ASSIGN_OR_RETURN(std::string text,
                             ReadWholeFile(CorpusField(i), options.corpus_files(i)));
    auto ids = tokenizer->Encode(text, /*add_bos=*/false, /*parse_special=*/false);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(CorpusField(i), ": cannot tokenize: ", ids.status().message()));
    }
    stream.insert(stream.end(), ids->begin(), ids->end());
  }
  if (stream.empty()) {
    return absl::InvalidArgumentError("calibration.corpus_files: the corpus has no tokens");
  }
  std::vector<int32_t> out(static_cast<size_t>(shape.tokens()));
  uint64_t state = request.seed();
  const auto n = static_cast<int64_t>(stream.size());
  for (int64_t r = 0; r < shape.rows; ++r) {
    // A row is a window of the corpus; a corpus shorter than a row wraps around.
    const int64_t span = n - shape.tokens_per_row + 1;
    const int64_t start = span > 0 ? static_cast<int64_t>(SplitMix64(state) % span) : 0;
    for (int64_t j = 0; j < shape.tokens_per_row; ++j) {
      out[r * shape.tokens_per_row + j] = stream[(start + j) % n];
    }
  }
  return out;
}

// `shape.rows` rows the model samples itself. The model is loaded here without a pool (rows run in
// parallel instead, self_generated_calibration.h) and freed before the pipeline loads its own.
absl::StatusOr<std::vector<int32_t>> SelfGeneratedRows(const v1::CreateJobRequest& request,
                                                       const formats::Checkpoint& checkpoint,
                                                       const CalibrationShape& shape,
                                                       const CalibrationRun& run) {
  engine::CheckpointWeightSource weights(checkpoint);
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::DecoderModel> model,
                           engine::DecoderModel::Load(checkpoint.config(), weights, nullptr));
  SelfGeneratedRowsOptions options;
  options.rows = shape.rows;
  options.tokens_per_row = shape.tokens_per_row;
  options.seed = request.seed();
  options.pool = run.pool;
  options.stop = run.stop;
  if (run.on_progress && shape.tokens() > 0) {
    options.on_tokens = [&run, total = static_cast<double>(shape.tokens())](int64_t done) {
      run.on_progress(static_cast<double>(done) / total);
    };
  }
  return SampleCalibrationRows(*model, options);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> BuildCalibrationTokens(const v1::CreateJobRequest& request,
                                                            const formats::Checkpoint& checkpoint,
                                                            const CalibrationShape& shape,
                                                            const CalibrationRun& run) {
  const v1::CalibrationOptions& options = request.calibration();
  const uint64_t vocab = checkpoint.config().vocab_size();
  if (vocab == 0) return absl::InvalidArgumentError("source: the model's vocab_size is 0");
  if (options.corpus_files_size() == 0 && !options.self_generated()) {
    // The built-in source is random rows already, so the fraction has nothing to replace.
    std::vector<int32_t> out(static_cast<size_t>(shape.tokens()));
    uint64_t state = request.seed();
    for (int32_t& t : out) t = static_cast<int32_t>(SplitMix64(state) % vocab);
    return out;
  }
  const double fraction = options.random_rows_fraction();
  CalibrationShape source_shape = shape;
  source_shape.rows = shape.rows - RandomRowCount(shape.rows, fraction);
  std::vector<int32_t> source;
  if (source_shape.rows == 0) {
    // Every row is random: nothing to sample or read.
  } else if (options.self_generated()) {
    BITLOOM_ASSIGN_OR_RETURN(source, SelfGeneratedRows(request, checkpoint, source_shape, run));
  } else {
    BITLOOM_ASSIGN_OR_RETURN(source, CorpusRows(request, checkpoint, source_shape));
  }
  if (source_shape.rows == shape.rows) return source;
  return MixRandomRows(source, shape, fraction, vocab, request.seed());
}

}  // namespace bitloom::quantd
