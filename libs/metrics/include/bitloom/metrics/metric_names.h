// Validation of metric and label names against the Prometheus data model.
//
// A metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*; a label name matches [a-zA-Z_][a-zA-Z0-9_]* and must
// not start with "__" (reserved for Prometheus itself). MetricsRegistry applies these checks when a
// family is registered, so a bad name fails at startup instead of producing an exposition the server
// rejects. Free functions over their arguments only: thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace bitloom::metrics {

// OK, or INVALID_ARGUMENT quoting the name.
absl::Status ValidateMetricName(std::string_view name);

// OK, or INVALID_ARGUMENT quoting the offending name (bad characters, "__" prefix, or a duplicate).
absl::Status ValidateLabelNames(const std::vector<std::string>& label_names);

}  // namespace bitloom::metrics
