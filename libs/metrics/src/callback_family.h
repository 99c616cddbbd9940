// A gauge or counter family whose samples are computed by a function at scrape time; see
// MetricsRegistry::AddGaugeCallback. Immutable after construction; AppendText may run concurrently.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bitloom/metrics/metric_family.h"
#include "bitloom/metrics/metrics_registry.h"

namespace bitloom::metrics::internal {

class CallbackFamily final : public FamilyBase {
 public:
  // `type` is "gauge" or "counter".
  CallbackFamily(std::string name, std::string help, std::string type,
                 std::vector<std::string> label_names,
                 std::function<std::vector<LabeledValue>()> fn);

  void AppendText(std::string* out) const override;

 private:
  const std::string name_;
  const std::string help_;
  const std::string type_;
  const std::vector<std::string> label_names_;
  const std::function<std::vector<LabeledValue>()> fn_;
};

}  // namespace bitloom::metrics::internal
