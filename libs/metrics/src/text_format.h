// Building blocks of the Prometheus text exposition format 0.0.4, shared by every family type.
// Pure functions: thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bitloom::metrics::internal {

// Shortest decimal that parses back to exactly `value` ("0.1", "1e+21"), or "+Inf", "-Inf", "NaN"
// as the format spells them.
void AppendDouble(double value, std::string* out);
std::string FormatDouble(double value);

// HELP text escaping: backslash and line feed.
void AppendEscapedHelp(std::string_view help, std::string* out);
// Label value escaping: backslash, double quote and line feed.
void AppendEscapedLabelValue(std::string_view value, std::string* out);

// `a="x",b="y"` (no braces); `names` and `values` have equal length.
std::string FormatLabelPairs(const std::vector<std::string>& names,
                             const std::vector<std::string>& values);

// "# HELP name help\n# TYPE name type\n".
void AppendHeader(std::string_view name, std::string_view help, std::string_view type,
                  std::string* out);

// "name{labels} value\n", or "name value\n" when `labels` is empty. `labels` is already formatted.
void AppendSample(std::string_view name, std::string_view labels, double value, std::string* out);

}  // namespace bitloom::metrics::internal
