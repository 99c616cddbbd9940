// MetricFamily<Child>: one named metric with a fixed set of label names, and its children, one per
// distinct tuple of label values (CounterFamily, GaugeFamily, HistogramFamily).
//
// Families are created and owned by MetricsRegistry and live as long as it does. A child returned by
// WithLabels() is created on first use and then never moves or dies before the registry, so callers
// look it up once (a mutex-guarded map lookup) and keep the reference for the hot path, which is
// lock-free. All methods are thread-safe. A family without labels has its single child created at
// registration, so it is exported (as 0) before anything is recorded.
#pragma once

#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/metrics/counter.h"
#include "bitloom/metrics/gauge.h"
#include "bitloom/metrics/histogram.h"

namespace bitloom::metrics {

namespace internal {

// What MetricsRegistry needs from every family, whatever its type: its text exposition.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  // Appends "# HELP", "# TYPE" and every sample line; appends nothing when there are no samples.
  virtual void AppendText(std::string* out) const = 0;
};

}  // namespace internal

template <typename Child>
class MetricFamily final : public internal::FamilyBase {
 public:
  // Used by MetricsRegistry, which has validated every argument. `bucket_bounds` is for histograms
  // only (null otherwise).
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names,
               std::shared_ptr<const std::vector<double>> bucket_bounds);
  MetricFamily(const MetricFamily&) = delete;
  MetricFamily& operator=(const MetricFamily&) = delete;

  // The child for these label values, in the order of the family's label names. A wrong number of
  // values is a programming error; rather than crash a serving process over a metric, it is logged
  // and a detached child (never exported) is returned. Use TryWithLabels to handle it as a Status.
  Child& WithLabels(std::initializer_list<std::string_view> label_values);
  Child& WithLabels(const std::vector<std::string>& label_values);

  // As WithLabels, but INVALID_ARGUMENT when the number of values does not match the label names.
  absl::StatusOr<Child*> TryWithLabels(const std::vector<std::string>& label_values);

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  void AppendText(std::string* out) const override;

 private:
  struct Entry {
    std::string label_text;  // `a="x",b="y"`, escaped once at creation so scrapes don't redo it
    std::unique_ptr<Child> child;
  };

  std::unique_ptr<Child> MakeChild() const;

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::shared_ptr<const std::vector<double>> bucket_bounds_;

  mutable std::mutex mu_;
  // std::map: children are exported sorted by label values, so scrapes are stable and diffable.
  std::map<std::vector<std::string>, Entry> children_;  // guarded by mu_
  std::unique_ptr<Child> detached_;                     // guarded by mu_; see WithLabels
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// Defined in metric_family.cc for exactly these three child types.
extern template class MetricFamily<Counter>;
extern template class MetricFamily<Gauge>;
extern template class MetricFamily<Histogram>;

}  // namespace bitloom::metrics
