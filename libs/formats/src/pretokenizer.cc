#include "bitloom/formats/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/unicode.h"
#include "pretokenizer_internal.h"

namespace bitloom::formats {
namespace {

using nlohmann::json;

// Oniguruma's \s (what tokenizer.json patterns were written against) also matches U+0085 NEXT LINE;
// PCRE2's UCP \s does not. Rewrite \s so both engines split the same text the same way.
std::string TranslateOnigPattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? R"(\s\x{85})" : R"([\s\x{85}])";
      } else if (e == 'S' && !in_class) {
        out += R"([^\s\x{85}])";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

// Per-thread PCRE2 match resources. JIT code runs on its own stack; the default 32 KiB overflows on
// patterns like \s+(?!\S) over long whitespace runs, so each thread gets a growable one.
struct ThreadMatchState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) {
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& s) {
  // Older tokenizer.json files spell these in snake_case.
  if (s == "Removed" || s == "removed") return SplitBehavior::kRemoved;
  if (s == "Isolated" || s == "isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious" || s == "merged_with_previous") {
    return SplitBehavior::kMergedWithPrevious;
  }
  if (s == "MergedWithNext" || s == "merged_with_next") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous" || s == "contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unknown split behavior \"", s, "\""));
}

// Splits `text` at the matches of `regex` and arranges the parts as `behavior` says.
absl::Status SplitPiece(std::string_view text, const Regex& regex, SplitBehavior behavior,
                        bool invert, std::vector<std::string>& out) {
  std::vector<std::pair<size_t, size_t>> matches;
  BITLOOM_RETURN_IF_ERROR(regex.FindAll(text, matches));
  // The text as alternating (range, is_delimiter) parts covering it completely.
  struct Part {
    size_t begin, end;
    bool delim;
  };
  std::vector<Part> parts;
  size_t pos = 0;
  for (const auto& [b, e] : matches) {
    if (b > pos) parts.push_back({pos, b, invert});
    parts.push_back({b, e, !invert});
    pos = e;
  }
  if (pos < text.size()) parts.push_back({pos, text.size(), invert});

  std::vector<std::string> pieces;
  bool glue_next = false;  // MergedWithNext: the previous delimiter waits for the next part
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& part = parts[i];
    const std::string_view s = text.substr(part.begin, part.end - part.begin);
    switch (behavior) {
      case SplitBehavior::kRemoved:
        if (!part.delim) pieces.emplace_back(s);
        break;
      case SplitBehavior::kIsolated:
        pieces.emplace_back(s);
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (part.delim && !pieces.empty() && !(i > 0 && parts[i - 1].delim)) {
          pieces.back().append(s);
        } else {
          pieces.emplace_back(s);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (glue_next) {
          pieces.back().append(s);
        } else {
          pieces.emplace_back(s);
        }
        glue_next = part.delim;
        break;
      case SplitBehavior::kContiguous:
        if (part.delim && i > 0 && parts[i - 1].delim) {
          pieces.back().append(s);
        } else {
          pieces.emplace_back(s);
        }
        break;
    }
  }
  for (auto& p : pieces) {
    if (!p.empty()) out.push_back(std::move(p));
  }
  return absl::OkStatus();
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

std::string JsonStr(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

bool JsonBool(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}

}  // namespace

// ---- Regex ----

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(std::string_view pattern,
                                                            bool literal) {
  std::shared_ptr<Regex> re(new Regex());
  re->pattern_ = std::string(pattern);
  const std::string translated = literal ? re->pattern_ : TranslateOnigPattern(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2 refuses UCP together with LITERAL; a literal has no classes for UCP to affect.
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(), options, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("bad regex \"", re->pattern_, "\" at offset ",
                                                   offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  re->code_ = code;
  // JIT is an optimisation: without it (an architecture PCRE2 cannot JIT for) matching is slower
  // but identical.
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<const Regex>(std::move(re));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(std::string_view text,
                            std::vector<std::pair<size_t, size_t>>& matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (data == nullptr) return absl::ResourceExhaustedError("pcre2: out of memory");
  pcre2_match_context* context = MatchState().context;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    // The caller validated the text as UTF-8 once; PCRE2 need not re-check it on every call.
    const int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                          data.get(), context)
                        : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                      data.get(), context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(absl::StrCat("regex \"", pattern_, "\" failed: ",
                                                       reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches.emplace_back(b, e);
      start = e;
    } else {
      // An empty match: step over one whole character so the next search starts on a boundary.
      if (b >= text.size()) break;
      start = b + std::max<size_t>(1, unicode::Utf8SequenceLength(static_cast<uint8_t>(text[b])));
    }
  }
  return absl::OkStatus();
}

// ---- Normalizer ----

absl::StatusOr<Normalizer> Normalizer::FromJson(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("normalizer: not valid JSON");
  return internal::NormalizerFromJson(j);
}

absl::StatusOr<std::string> Normalizer::Apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Step::Kind::kPrepend:
        // tokenizers' Prepend leaves an empty string empty.
        if (!s.empty()) s = step.content + s;
        break;
      case Step::Kind::kReplace: {
        std::vector<std::pair<size_t, size_t>> matches;
        BITLOOM_RETURN_IF_ERROR(step.pattern->FindAll(s, matches));
        if (matches.empty()) break;
        std::string out;
        size_t pos = 0;
        for (const auto& [b, e] : matches) {
          out.append(s, pos, b - pos);
          out.append(step.content);
          pos = e;
        }
        out.append(s, pos, std::string::npos);
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

// ---- PreTokenizer ----

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("pre_tokenizer: not valid JSON");
  return internal::PreTokenizerFromJson(j);
}

bool PreTokenizer::byte_level() const {
  for (const Step& s : steps_) {
    if (s.kind == Step::Kind::kByteLevel) return true;
  }
  return false;
}

absl::Status PreTokenizer::Apply(std::string_view text, bool at_text_start,
                                 std::vector<std::string>& pieces) const {
  std::vector<std::string> current;
  current.emplace_back(text);
  std::vector<std::string> next;
  for (const Step& step : steps_) {
    next.clear();
    for (size_t i = 0; i < current.size(); ++i) {
      const std::string& piece = current[i];
      switch (step.kind) {
        case Step::Kind::kSplit:
        case Step::Kind::kDigits:
          BITLOOM_RETURN_IF_ERROR(
              SplitPiece(piece, *step.pattern, step.behavior, step.invert, next));
          break;
        case Step::Kind::kByteLevel: {
          std::string prefixed;
          std::string_view src = piece;
          if (step.add_prefix_space && !piece.starts_with(' ')) {
            prefixed = " " + piece;
            src = prefixed;
          }
          std::vector<std::string> split;
          if (step.pattern != nullptr) {
            BITLOOM_RETURN_IF_ERROR(
                SplitPiece(src, *step.pattern, SplitBehavior::kIsolated, false, split));
          } else {
            split.emplace_back(src);
          }
          for (const std::string& s : split) {
            std::string mapped;
            mapped.reserve(s.size() * 2);
            for (char c : s) mapped += unicode::ByteToLevelChar(static_cast<uint8_t>(c));
            next.push_back(std::move(mapped));
          }
          break;
        }
        case Step::Kind::kMetaspace: {
          std::string s = ReplaceAll(piece, " ", step.replacement);
          const bool prepend = step.prepend_scheme == "always" ||
                               (step.prepend_scheme == "first" && at_text_start && i == 0);
          if (prepend && !s.starts_with(step.replacement)) s = step.replacement + s;
          if (!step.split || step.pattern == nullptr) {
            next.push_back(std::move(s));
            break;
          }
          // Each marker starts a new piece.
          BITLOOM_RETURN_IF_ERROR(
              SplitPiece(s, *step.pattern, SplitBehavior::kMergedWithNext, false, next));
          break;
        }
      }
    }
    current.swap(next);
  }
  for (auto& p : current) {
    if (!p.empty()) pieces.push_back(std::move(p));
  }
  return absl::OkStatus();
}

// ---- JSON ----

namespace internal {

absl::StatusOr<std::shared_ptr<const Regex>> PatternFromJson(const json& j) {
  if (j.is_object()) {
    if (auto it = j.find("String"); it != j.end() && it->is_string()) {
      return Regex::Compile(it->get<std::string>(), /*literal=*/true);
    }
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
      return Regex::Compile(it->get<std::string>());
    }
  }
  return absl::InvalidArgumentError("pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

absl::StatusOr<Normalizer> NormalizerFromJson(const json& j) {
  Normalizer n;
  if (j.is_null()) return n;
  if (!j.is_object()) return absl::InvalidArgumentError("normalizer: expected an object");
  const std::string type = JsonStr(j, "type");
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return absl::InvalidArgumentError("normalizer Sequence: missing \"normalizers\" array");
    }
    for (const json& sub : *it) {
      BITLOOM_ASSIGN_OR_RETURN(Normalizer inner, NormalizerFromJson(sub));
      for (const Normalizer::Step& s : inner.steps()) n.Add(s);
    }
    return n;
  }
  if (type == "Replace") {
    auto it = j.find("pattern");
    if (it == j.end()) return absl::InvalidArgumentError("normalizer Replace: missing pattern");
    Normalizer::Step step;
    step.kind = Normalizer::Step::Kind::kReplace;
    BITLOOM_ASSIGN_OR_RETURN(step.pattern, PatternFromJson(*it));
    step.content = JsonStr(j, "content");
    n.Add(std::move(step));
    return n;
  }
  if (type == "Prepend") {
    Normalizer::Step step;
    step.kind = Normalizer::Step::Kind::kPrepend;
    step.content = JsonStr(j, "prepend");
    n.Add(std::move(step));
    return n;
  }
  return absl::UnimplementedError(
      absl::StrCat("normalizer type \"", type, "\" is not supported (Sequence, Replace, Prepend)"));
}

absl::StatusOr<PreTokenizer> PreTokenizerFromJson(const json& j) {
  PreTokenizer p;
  if (j.is_null()) return p;
  if (!j.is_object()) return absl::InvalidArgumentError("pre_tokenizer: expected an object");
  const std::string type = JsonStr(j, "type");
  PreTokenizer::Step step;
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: missing \"pretokenizers\" array");
    }
    for (const json& sub : *it) {
      BITLOOM_ASSIGN_OR_RETURN(PreTokenizer inner, PreTokenizerFromJson(sub));
      for (const PreTokenizer::Step& s : inner.steps()) p.Add(s);
    }
    return p;
  }
  if (type == "Split") {
    step.kind = PreTokenizer::Step::Kind::kSplit;
    auto it = j.find("pattern");
    if (it == j.end()) return absl::InvalidArgumentError("pre_tokenizer Split: missing pattern");
    BITLOOM_ASSIGN_OR_RETURN(step.pattern, PatternFromJson(*it));
    BITLOOM_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(JsonStr(j, "behavior", "Isolated")));
    step.invert = JsonBool(j, "invert", false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizer::Step::Kind::kByteLevel;
    step.add_prefix_space = JsonBool(j, "add_prefix_space", true);
    if (JsonBool(j, "use_regex", true)) {
      BITLOOM_ASSIGN_OR_RETURN(step.pattern, Regex::Compile(kGpt2Pattern));
    }
  } else if (type == "Metaspace") {
    step.kind = PreTokenizer::Step::Kind::kMetaspace;
    step.replacement = JsonStr(j, "replacement", std::string(unicode::kSpaceMarker));
    // Older files say add_prefix_space instead of prepend_scheme.
    step.prepend_scheme =
        JsonStr(j, "prepend_scheme", JsonBool(j, "add_prefix_space", true) ? "always" : "never");
    step.split = JsonBool(j, "split", true);
    BITLOOM_ASSIGN_OR_RETURN(step.pattern, Regex::Compile(step.replacement, /*literal=*/true));
  } else if (type == "Digits") {
    step.kind = PreTokenizer::Step::Kind::kDigits;
    const bool individual = JsonBool(j, "individual_digits", false);
    BITLOOM_ASSIGN_OR_RETURN(step.pattern, Regex::Compile(R"(\p{N})"));
    step.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "pre_tokenizer type \"", type,
        "\" is not supported (Sequence, Split, ByteLevel, Metaspace, Digits)"));
  }
  p.Add(std::move(step));
  return p;
}

}  // namespace internal
}  // namespace bitloom::formats
