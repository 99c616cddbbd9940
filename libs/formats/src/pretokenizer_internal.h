// JSON entry points of the normalizer/pre-tokenizer parsers, for the tokenizer.json loader. Kept out
// of the public header so that nlohmann_json stays a private dependency of bitloom::formats.
#pragma once

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "bitloom/formats/pretokenizer.h"

namespace bitloom::formats::internal {

absl::StatusOr<Normalizer> NormalizerFromJson(const nlohmann::json& j);
absl::StatusOr<PreTokenizer> PreTokenizerFromJson(const nlohmann::json& j);
// The "pattern" object of Split/Replace: {"String": s} or {"Regex": r}.
absl::StatusOr<std::shared_ptr<const Regex>> PatternFromJson(const nlohmann::json& j);

}  // namespace bitloom::formats::internal
