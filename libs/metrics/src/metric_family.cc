#include "bitloom/metrics/metric_family.h"

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "text_format.h"

namespace bitloom::metrics {

template <typename Child>
MetricFamily<Child>::MetricFamily(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::shared_ptr<const std::vector<double>> bucket_bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bucket_bounds_(std::move(bucket_bounds)) {
  // A family without labels has exactly one child; create it now so the metric is exported (as 0)
  // from the first scrape, not from the first event, which keeps rate() and absent() honest.
  if (label_names_.empty()) children_.emplace(std::vector<std::string>{}, Entry{"", MakeChild()});
}

template <typename Child>
std::unique_ptr<Child> MetricFamily<Child>::MakeChild() const {
  if constexpr (std::is_same_v<Child, Histogram>) {
    return std::make_unique<Histogram>(bucket_bounds_);
  } else {
    return std::make_unique<Child>();
  }
}

template <typename Child>
absl::StatusOr<Child*> MetricFamily<Child>::TryWithLabels(
    const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("metric ", name_, " has ", label_names_.size(),
                                                   " label(s), got ", label_values.size(),
                                                   " value(s)"));
  }
  std::lock_guard lock(mu_);
  auto it = children_.find(label_values);
  if (it == children_.end()) {
    Entry entry{internal::FormatLabelPairs(label_names_, label_values), MakeChild()};
    it = children_.emplace(label_values, std::move(entry)).first;
  }
  return it->second.child.get();
}

template <typename Child>
Child& MetricFamily<Child>::WithLabels(const std::vector<std::string>& label_values) {
  absl::StatusOr<Child*> child = TryWithLabels(label_values);
  if (child.ok()) return **child;
  BITLOOM_LOG(ERROR) << "metrics: " << child.status().message()
                     << "; recording into a detached child that is never exported";
  std::lock_guard lock(mu_);
  if (detached_ == nullptr) detached_ = MakeChild();
  return *detached_;
}

template <typename Child>
Child& MetricFamily<Child>::WithLabels(std::initializer_list<std::string_view> label_values) {
  return WithLabels(std::vector<std::string>(label_values.begin(), label_values.end()));
}

template <typename Child>
void MetricFamily<Child>::AppendText(std::string* out) const {
  std::lock_guard lock(mu_);
  if (children_.empty()) return;
  if constexpr (std::is_same_v<Child, Counter>) {
    internal::AppendHeader(name_, help_, "counter", out);
    for (const auto& [values, entry] : children_) {
      internal::AppendSample(name_, entry.label_text, entry.child->Value(), out);
    }
  } else if constexpr (std::is_same_v<Child, Gauge>) {
    internal::AppendHeader(name_, help_, "gauge", out);
    for (const auto& [values, entry] : children_) {
      internal::AppendSample(name_, entry.label_text, entry.child->Value(), out);
    }
  } else {
    static_assert(std::is_same_v<Child, Histogram>);
    internal::AppendHeader(name_, help_, "histogram", out);
    const std::string bucket_name = name_ + "_bucket";
    const std::string sum_name = name_ + "_sum";
    const std::string count_name = name_ + "_count";
    // The le label values are the same for every child: format them once per scrape.
    std::vector<std::string> le_values;
    le_values.reserve(bucket_bounds_->size() + 1);
    for (const double bound : *bucket_bounds_) le_values.push_back(internal::FormatDouble(bound));
    le_values.push_back("+Inf");
    for (const auto& [values, entry] : children_) {
      const Histogram::Snapshot snapshot = entry.child->Read();
      const std::string prefix = entry.label_text.empty() ? "" : entry.label_text + ",";
      for (size_t i = 0; i < le_values.size(); ++i) {
        internal::AppendSample(bucket_name, absl::StrCat(prefix, "le=\"", le_values[i], "\""),
                               static_cast<double>(snapshot.cumulative_counts[i]), out);
      }
      internal::AppendSample(sum_name, entry.label_text, snapshot.sum, out);
      internal::AppendSample(count_name, entry.label_text, static_cast<double>(snapshot.count),
                             out);
    }
  }
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

}  // namespace bitloom::metrics
