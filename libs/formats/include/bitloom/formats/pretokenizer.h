// Normalizers and pre-tokenizers: the text stages that run before BPE, as Hugging Face `tokenizers`
// defines them (tokenizer.json "normalizer" and "pre_tokenizer"), plus the regex engine they share.
//
// A Normalizer rewrites a text segment (Replace, Prepend, in sequence; Unicode normalization forms are not supported and
// are reported as UNIMPLEMENTED when a tokenizer.json asks for one). A PreTokenizer cuts
// it into pieces that BPE encodes independently (Split by regex or string with one of the five split
// behaviours, ByteLevel, Metaspace, Digits, in sequence). Regexes use PCRE2 in UTF + UCP mode so that
// \p{L}, \p{N} and \s cover all of Unicode, are compiled once, and JIT-compiled when PCRE2 supports it.
// All three classes are immutable after construction; their const methods are thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace bitloom::formats {

class Regex {
 public:
  // `pattern` in the dialect tokenizer.json uses (Oniguruma, Ruby syntax); translated where PCRE2
  // differs. `literal` treats the pattern as a plain string.
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(std::string_view pattern,
                                                              bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping, non-empty matches in `text`.
  absl::Status FindAll(std::string_view text,
                       std::vector<std::pair<size_t, size_t>>& matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*; void* keeps <pcre2.h> out of this header
  bool jit_ = false;
};

class Normalizer {
 public:
  struct Step {
    enum class Kind { kReplace, kPrepend };
    Kind kind = Kind::kReplace;
    std::shared_ptr<const Regex> pattern;  // kReplace
    std::string content;                   // kReplace: replacement; kPrepend: prefix
  };

  // Parses a tokenizer.json "normalizer" object (already JSON-decoded text of it).
  static absl::StatusOr<Normalizer> FromJson(std::string_view json);
  void Add(Step step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  const std::vector<Step>& steps() const { return steps_; }
  absl::StatusOr<std::string> Apply(std::string_view text) const;

 private:
  std::vector<Step> steps_;
};

// How a Split keeps the matched delimiters (tokenizer.json SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  struct Step {
    enum class Kind { kSplit, kByteLevel, kMetaspace, kDigits };
    Kind kind = Kind::kSplit;
    // kSplit; kByteLevel with use_regex (the GPT-2 pattern); kDigits (\p{N}); kMetaspace (the
    // replacement, literally).
    std::shared_ptr<const Regex> pattern;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    // kByteLevel: prefix a space to a piece that does not start with one.
    bool add_prefix_space = false;
    // kMetaspace: replacement (U+2581), when to prepend it ("always", "first", "never"), and
    // whether to split before each replacement.
    std::string replacement;
    std::string prepend_scheme = "always";
    bool split = true;
  };

  static absl::StatusOr<PreTokenizer> FromJson(std::string_view json);
  void Add(Step step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  const std::vector<Step>& steps() const { return steps_; }
  bool byte_level() const;

  // Cuts `text` into pieces, appended to `pieces`. `at_text_start` is true when `text` begins the
  // whole input (Metaspace's "first" prepend scheme needs it).
  absl::Status Apply(std::string_view text, bool at_text_start,
                     std::vector<std::string>& pieces) const;

 private:
  std::vector<Step> steps_;
};

// The pre-tokenizer regexes of the model families Bitloom supports, as written in their
// tokenizer.json files (llama.cpp names them by tokenizer.ggml.pre).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace bitloom::formats
