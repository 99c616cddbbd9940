// ServingMetrics: the generation metrics of inferd (docs/METRICS.md, "inferd only") that are recorded
// as events happen. Gauges that are cheaper to read than to track (requests running and waiting, KV
// pages) are registered as scrape-time callbacks by InferenceServiceImpl instead.
//
// Register() creates every family once at startup; ForModel() resolves one model's children so the
// scheduler's hot path is a few atomic adds. The pointers live as long as the registry. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/metrics/metrics_registry.h"

namespace bitloom::inferd {

// One model's children of the labeled families, plus the unlabeled ones.
struct ModelMetrics {
  metrics::Histogram* time_to_first_token = nullptr;
  metrics::Histogram* inter_token_latency = nullptr;
  metrics::Counter* generated_tokens = nullptr;
  metrics::Counter* prompt_tokens = nullptr;
  metrics::Histogram* batch_size = nullptr;
};

class ServingMetrics {
 public:
  static absl::StatusOr<std::unique_ptr<ServingMetrics>> Register(metrics::MetricsRegistry& registry);

  ModelMetrics ForModel(const std::string& model_id) const;
  metrics::Histogram& model_load_seconds() const { return *load_seconds_; }

 private:
  ServingMetrics() = default;
  metrics::HistogramFamily* ttft_ = nullptr;
  metrics::HistogramFamily* itl_ = nullptr;
  metrics::CounterFamily* generated_ = nullptr;
  metrics::CounterFamily* prompt_ = nullptr;
  metrics::Histogram* batch_size_ = nullptr;
  metrics::Histogram* load_seconds_ = nullptr;
};

}  // namespace bitloom::inferd
