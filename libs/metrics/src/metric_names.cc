#include "bitloom/metrics/metric_names.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace bitloom::metrics {
namespace {

bool IsAsciiLetterOrUnderscore(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

// Quotes `s` for an error message; absl::StrCat takes absl::string_view, which is not
// std::string_view in this abseil build, hence the std::string.
std::string Quoted(std::string_view s) { return absl::StrCat("\"", std::string(s), "\""); }

}  // namespace

absl::Status ValidateMetricName(std::string_view name) {
  bool ok = !name.empty();
  for (size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    ok = IsAsciiLetterOrUnderscore(c) || c == ':' || (i > 0 && IsAsciiDigit(c));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name ", Quoted(name),
                                                   ": must match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelNames(const std::vector<std::string>& label_names) {
  std::set<std::string_view> seen;
  for (const std::string& name : label_names) {
    bool ok = !name.empty();
    for (size_t i = 0; ok && i < name.size(); ++i) {
      ok = IsAsciiLetterOrUnderscore(name[i]) || (i > 0 && IsAsciiDigit(name[i]));
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label name ", Quoted(name),
                                                     ": must match [a-zA-Z_][a-zA-Z0-9_]*"));
    }
    if (name.starts_with("__")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid label name ", Quoted(name), ": names starting with \"__\" are reserved"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate label name ", Quoted(name)));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::metrics
