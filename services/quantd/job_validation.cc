#include "job_validation.h"

#include <sys/stat.h>

#include <cmath>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/service/field_names.h"

namespace bitloom::quantd {
namespace {

absl::Status CheckPath(const std::string& field, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": must not be empty"));
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", path.size(), " bytes is longer than ", kMaxPathBytes));
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": contains a NUL byte"));
  }
  return absl::OkStatus();
}

absl::Status CheckRange(const std::string& field, double value, double lo, double hi) {
  if (!std::isfinite(value) || value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckExists(const std::string& field, const std::string& path, bool want_directory) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(field, ": '", path, "' does not exist"));
  }
  if (want_directory && !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' is not a directory"));
  }
  if (!want_directory && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' is not a regular file"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateCreateJobRequest(const v1::CreateJobRequest& request) {
  switch (request.source_case()) {
    case v1::CreateJobRequest::kHuggingFace:
      BITLOOM_RETURN_IF_ERROR(
          CheckPath("hugging_face.directory", request.hugging_face().directory()));
      break;
    case v1::CreateJobRequest::kGguf:
      BITLOOM_RETURN_IF_ERROR(CheckPath("gguf.path", request.gguf().path()));
      if (!absl::EndsWithIgnoreCase(request.gguf().path(), ".gguf")) {
        return absl::InvalidArgumentError(
            absl::StrCat("gguf.path: '", request.gguf().path(), "' does not end in .gguf"));
      }
      break;
    case v1::CreateJobRequest::SOURCE_NOT_SET:
      return absl::InvalidArgumentError("source: set one of hugging_face or gguf");
  }
  BITLOOM_RETURN_IF_ERROR(service::ForField(
      "artifact_name", modelstore::ModelStore::ValidateArtifactName(request.artifact_name())));
  BITLOOM_RETURN_IF_ERROR(CheckRange("target_bits_per_weight", request.target_bits_per_weight(),
                                     kMinTargetBits, kMaxTargetBits));
  if (!v1::QuantizationMethod_IsValid(request.method())) {
    return absl::InvalidArgumentError(
        absl::StrCat("method: ", request.method(), " is not a QuantizationMethod"));
  }
  if (request.method() == v1::QUANTIZATION_METHOD_UNIFORM_LDLQ ||
      request.method() == v1::QUANTIZATION_METHOD_UNIFORM_RTN) {
    const double k = request.target_bits_per_weight();
    if (k != std::floor(k) || k < 2.0 || k > 8.0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target_bits_per_weight: ", k, " must be a whole code width in [2, 8] for method ",
          v1::QuantizationMethod_Name(request.method())));
    }
  }
  if (request.head_bits_per_weight() != 0) {
    BITLOOM_RETURN_IF_ERROR(CheckRange("head_bits_per_weight", request.head_bits_per_weight(),
                                       kMinHeadBits, kMaxHeadBits));
  }
  const v1::CalibrationOptions& calibration = request.calibration();
  if (calibration.corpus_files_size() > kMaxCorpusFiles) {
    return absl::InvalidArgumentError(absl::StrCat("calibration.corpus_files: ",
                                                   calibration.corpus_files_size(),
                                                   " files is more than ", kMaxCorpusFiles));
  }
  if (calibration.self_generated() && calibration.corpus_files_size() > 0) {
    return absl::InvalidArgumentError(
        "calibration.self_generated: cannot be combined with calibration.corpus_files (the rows "
        "come from one source; give one of them, or neither for the built-in calibration)");
  }
  BITLOOM_RETURN_IF_ERROR(CheckRange("calibration.random_rows_fraction",
                                     calibration.random_rows_fraction(), 0.0, 1.0));
  for (int i = 0; i < calibration.corpus_files_size(); ++i) {
    BITLOOM_RETURN_IF_ERROR(
        CheckPath(absl::StrCat("calibration.corpus_files[", i, "]"), calibration.corpus_files(i)));
  }
  if (calibration.rows() > kMaxCalibrationRows) {
    return absl::InvalidArgumentError(absl::StrCat("calibration.rows: ", calibration.rows(),
                                                   " is outside [1, ", kMaxCalibrationRows, "]"));
  }
  if (calibration.tokens_per_row() != 0 && (calibration.tokens_per_row() < kMinTokensPerRow ||
                                            calibration.tokens_per_row() > kMaxTokensPerRow)) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration.tokens_per_row: ", calibration.tokens_per_row(),
                     " is outside [", kMinTokensPerRow, ", ", kMaxTokensPerRow, "]"));
  }
  for (int i = 0; i < request.allowed_codecs_size(); ++i) {
    const int codec = request.allowed_codecs(i);
    if (codec == v1::CODEC_UNSPECIFIED || !v1::Codec_IsValid(codec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("allowed_codecs[", i, "]: ", codec, " is not a known codec"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateJobSources(const v1::CreateJobRequest& request) {
  if (request.has_hugging_face()) {
    BITLOOM_RETURN_IF_ERROR(
        CheckExists("hugging_face.directory", request.hugging_face().directory(), true));
  } else if (request.has_gguf()) {
    BITLOOM_RETURN_IF_ERROR(CheckExists("gguf.path", request.gguf().path(), false));
  }
  for (int i = 0; i < request.calibration().corpus_files_size(); ++i) {
    BITLOOM_RETURN_IF_ERROR(CheckExists(absl::StrCat("calibration.corpus_files[", i, "]"),
                                        request.calibration().corpus_files(i), false));
  }
  return absl::OkStatus();
}

}  // namespace bitloom::quantd
