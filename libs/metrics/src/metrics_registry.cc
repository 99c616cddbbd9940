#include "bitloom/metrics/metrics_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/metrics/metric_names.h"
#include "callback_family.h"

namespace bitloom::metrics {
namespace {

constexpr std::string_view kCounterSuffix = "_total";

// Counters must carry the conventional suffix so the registered name is the queried name; other
// types must not, or dashboards would treat them as counters (and promtool flags them).
absl::Status CheckCounterSuffix(std::string_view name, bool is_counter) {
  const bool has_suffix = name.ends_with(kCounterSuffix);
  if (is_counter && !has_suffix) {
    return absl::InvalidArgumentError(
        absl::StrCat("counter name \"", std::string(name), "\" must end in \"_total\""));
  }
  if (!is_counter && has_suffix) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metric name \"", std::string(name), "\" ends in \"_total\", which is for counters only"));
  }
  return absl::OkStatus();
}

absl::Status CheckLabelNames(std::string_view name, const std::vector<std::string>& label_names) {
  absl::Status status = ValidateLabelNames(label_names);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric \"", std::string(name), "\": ", std::string(status.message())));
  }
  return absl::OkStatus();
}

}  // namespace

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

absl::Status MetricsRegistry::Register(std::string_view name, std::string_view help,
                                       const std::vector<std::string>& sample_names,
                                       std::unique_ptr<internal::FamilyBase> family) {
  BITLOOM_RETURN_IF_ERROR(ValidateMetricName(name));
  if (help.empty()) {
    // promtool rejects metrics without HELP, and docs/METRICS.md is written from these strings.
    return absl::InvalidArgumentError(
        absl::StrCat("metric \"", std::string(name), "\" needs a help text"));
  }
  std::lock_guard lock(mu_);
  if (families_.contains(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("metric \"", std::string(name), "\" is already registered"));
  }
  for (const std::string& sample_name : sample_names) {
    if (sample_names_.contains(sample_name)) {
      return absl::AlreadyExistsError(absl::StrCat("metric \"", std::string(name), "\" would emit \"",
                                                   sample_name,
                                                   "\", which another metric already emits"));
    }
  }
  sample_names_.insert(sample_names.begin(), sample_names.end());
  families_.emplace(std::string(name), std::move(family));
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> MetricsRegistry::AddCounter(std::string_view name,
                                                          std::string_view help,
                                                          std::vector<std::string> label_names) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/true));
  BITLOOM_RETURN_IF_ERROR(CheckLabelNames(name, label_names));
  auto family = std::make_unique<CounterFamily>(std::string(name), std::string(help),
                                                std::move(label_names), nullptr);
  CounterFamily* result = family.get();
  BITLOOM_RETURN_IF_ERROR(Register(name, help, {std::string(name)}, std::move(family)));
  return result;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(std::string_view name, std::string_view help,
                                                      std::vector<std::string> label_names) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/false));
  BITLOOM_RETURN_IF_ERROR(CheckLabelNames(name, label_names));
  auto family = std::make_unique<GaugeFamily>(std::string(name), std::string(help),
                                              std::move(label_names), nullptr);
  GaugeFamily* result = family.get();
  BITLOOM_RETURN_IF_ERROR(Register(name, help, {std::string(name)}, std::move(family)));
  return result;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(std::string_view name,
                                                              std::string_view help,
                                                              std::vector<std::string> label_names,
                                                              std::vector<double> bucket_bounds) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/false));
  BITLOOM_RETURN_IF_ERROR(CheckLabelNames(name, label_names));
  if (std::find(label_names.begin(), label_names.end(), "le") != label_names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "histogram \"", std::string(name), "\": \"le\" is reserved for the bucket label"));
  }
  absl::StatusOr<std::vector<double>> bounds = ValidateBucketBounds(std::move(bucket_bounds));
  if (!bounds.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("histogram \"", std::string(name),
                                                   "\": ", std::string(bounds.status().message())));
  }
  const std::string base(name);
  auto family = std::make_unique<HistogramFamily>(
      base, std::string(help), std::move(label_names),
      std::make_shared<const std::vector<double>>(*std::move(bounds)));
  HistogramFamily* result = family.get();
  // The family name itself is reserved too, so no gauge can later take the histogram's base name.
  BITLOOM_RETURN_IF_ERROR(Register(
      name, help, {base, base + "_bucket", base + "_sum", base + "_count"}, std::move(family)));
  return result;
}

absl::Status MetricsRegistry::AddGaugeCallback(std::string_view name, std::string_view help,
                                               std::function<double()> fn) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/false));
  auto family = std::make_unique<internal::CallbackFamily>(
      std::string(name), std::string(help), "gauge", std::vector<std::string>{},
      [fn = std::move(fn)] { return std::vector<LabeledValue>{{{}, fn()}}; });
  return Register(name, help, {std::string(name)}, std::move(family));
}

absl::Status MetricsRegistry::AddCounterCallback(std::string_view name, std::string_view help,
                                                 std::function<double()> fn) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/true));
  auto family = std::make_unique<internal::CallbackFamily>(
      std::string(name), std::string(help), "counter", std::vector<std::string>{},
      [fn = std::move(fn)] { return std::vector<LabeledValue>{{{}, fn()}}; });
  return Register(name, help, {std::string(name)}, std::move(family));
}

absl::Status MetricsRegistry::AddLabeledGaugeCallback(
    std::string_view name, std::string_view help, std::vector<std::string> label_names,
    std::function<std::vector<LabeledValue>()> fn) {
  BITLOOM_RETURN_IF_ERROR(CheckCounterSuffix(name, /*is_counter=*/false));
  BITLOOM_RETURN_IF_ERROR(CheckLabelNames(name, label_names));
  auto family = std::make_unique<internal::CallbackFamily>(
      std::string(name), std::string(help), "gauge", std::move(label_names), std::move(fn));
  return Register(name, help, {std::string(name)}, std::move(family));
}

std::string MetricsRegistry::Serialize() const {
  // Families are never removed, so the pointers stay valid after the lock is released; serializing
  // outside it keeps slow callbacks from blocking registration or a concurrent scrape.
  std::vector<const internal::FamilyBase*> families;
  {
    std::lock_guard lock(mu_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) families.push_back(family.get());
  }
  std::string out;
  for (const internal::FamilyBase* family : families) family->AppendText(&out);
  return out;
}

}  // namespace bitloom::metrics
