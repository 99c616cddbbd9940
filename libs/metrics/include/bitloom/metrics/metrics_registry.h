// MetricsRegistry: the set of metric families one process exports, and their text exposition.
//
// The registry owns every family (and through them every child); the pointers Add* return stay valid
// until the registry is destroyed, which must happen after the last use of any of them and after the
// MetricsHttpServer serving it has stopped. Names are checked at registration: an invalid name, an
// empty help text, a duplicate name, or a name that collides with a sample another family emits
// (histogram "x" emits x_bucket, x_sum, x_count) fails with INVALID_ARGUMENT or ALREADY_EXISTS, so
// services fail at startup rather than export something Prometheus rejects. Counter names must end in
// "_total" (the name you register is the name you query); other types must not.
// All methods are thread-safe. Serialize() may run concurrently with registration and recording.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/metrics/metric_family.h"

namespace bitloom::metrics {

// One sample produced by a labeled callback: label values in the order of the family's label names.
struct LabeledValue {
  std::vector<std::string> label_values;
  double value = 0.0;
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  absl::StatusOr<CounterFamily*> AddCounter(std::string_view name, std::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names = {});
  // `bucket_bounds`: finite, strictly increasing upper bounds; +Inf is implicit (see histogram.h).
  // "le" is reserved for the bucket label and cannot be a label name.
  absl::StatusOr<HistogramFamily*> AddHistogram(std::string_view name, std::string_view help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bucket_bounds);

  // Values computed at scrape time, for state that is cheaper to read than to track (artifacts in
  // the store, process CPU time). `fn` runs on the scraping thread without the registry's lock held,
  // possibly concurrently with itself when scrapes overlap, so it must be thread-safe and quick (it
  // delays the scrape). The registry owns `fn`: what it captures must outlive the registry.
  absl::Status AddGaugeCallback(std::string_view name, std::string_view help,
                                std::function<double()> fn);
  // As AddGaugeCallback for a monotonic value; `name` must end in "_total".
  absl::Status AddCounterCallback(std::string_view name, std::string_view help,
                                  std::function<double()> fn);
  // A gauge whose labeled samples are all produced by `fn` at scrape time (for example pool bytes by
  // region). Samples with the wrong number of label values, or repeating a label tuple, are dropped
  // and logged.
  absl::Status AddLabeledGaugeCallback(std::string_view name, std::string_view help,
                                       std::vector<std::string> label_names,
                                       std::function<std::vector<LabeledValue>()> fn);

  // The Prometheus text exposition format, version 0.0.4: families sorted by name, children sorted by
  // label values; families with no samples yet (labeled, nothing recorded) are omitted.
  std::string Serialize() const;

 private:
  // Validates `name`, `help` and the names `sample_names` the family emits, then takes ownership.
  absl::Status Register(std::string_view name, std::string_view help,
                        const std::vector<std::string>& sample_names,
                        std::unique_ptr<internal::FamilyBase> family);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>, std::less<>> families_;  // by mu_
  std::set<std::string, std::less<>> sample_names_;  // every sample name in use; guarded by mu_
};

}  // namespace bitloom::metrics
