#include "callback_family.h"

#include <algorithm>

#include "bitloom/core/logging.h"
#include "text_format.h"

namespace bitloom::metrics::internal {

CallbackFamily::CallbackFamily(std::string name, std::string help, std::string type,
                               std::vector<std::string> label_names,
                               std::function<std::vector<LabeledValue>()> fn)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(std::move(type)),
      label_names_(std::move(label_names)),
      fn_(std::move(fn)) {}

void CallbackFamily::AppendText(std::string* out) const {
  std::vector<LabeledValue> samples = fn_();
  // Sorted like MetricFamily's children, so the exposition does not depend on the callback's order;
  // stable so that, of two samples with one label tuple, the first one returned is the one kept.
  std::stable_sort(samples.begin(), samples.end(),
                   [](const LabeledValue& a, const LabeledValue& b) {
                     return a.label_values < b.label_values;
                   });
  bool header_written = false;
  const std::vector<std::string>* previous = nullptr;
  for (const LabeledValue& sample : samples) {
    if (sample.label_values.size() != label_names_.size()) {
      BITLOOM_LOG(ERROR) << "metrics: callback for " << name_ << " returned "
                         << sample.label_values.size() << " label value(s) for "
                         << label_names_.size() << " label(s); sample dropped";
      continue;
    }
    if (previous != nullptr && *previous == sample.label_values) {
      // Prometheus rejects a scrape with a repeated series, which would lose every other metric.
      BITLOOM_LOG(ERROR) << "metrics: callback for " << name_
                         << " returned one label set twice; duplicate dropped";
      continue;
    }
    previous = &sample.label_values;
    if (!header_written) {
      AppendHeader(name_, help_, type_, out);
      header_written = true;
    }
    AppendSample(name_, FormatLabelPairs(label_names_, sample.label_values), sample.value, out);
  }
}

}  // namespace bitloom::metrics::internal
