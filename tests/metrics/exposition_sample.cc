// Writes a representative exposition to stdout for `promtool check metrics` (see CMakeLists.txt):
// every metric kind, with and without labels, escaping, special values, the process collector and
// the request metrics, under both daemon prefixes, so Prometheus's own parser and linter see what the
// daemons will serve.
#include <cstdio>
#include <limits>
#include <string>

#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/metrics/process_collector.h"
#include "bitloom/metrics/request_metrics.h"

namespace {

absl::Status BuildSample(bitloom::metrics::MetricsRegistry& registry) {
  using namespace bitloom::metrics;
  for (const char* prefix : {"bitloom_quantd", "bitloom_inferd"}) {
    if (absl::Status s = ProcessCollector::Register(registry, prefix, "0.1.0"); !s.ok()) return s;
    absl::StatusOr<RequestMetrics> requests = RequestMetrics::Create(registry, prefix);
    if (!requests.ok()) return requests.status();
    const std::string method = std::string(prefix) == "bitloom_quantd"
                                   ? "/bitloom.v1.Quantize/SubmitJob"
                                   : "/bitloom.v1.Inference/Generate";
    requests->Begin(method);
    requests->End(method, "OK", 0.012);
    requests->Begin(method);
    requests->End(method, "INVALID_ARGUMENT", 0.0004);
    requests->Begin("/grpc.health.v1.Health/Watch");
  }

  absl::StatusOr<CounterFamily*> ops = registry.AddCounter(
      "bitloom_quantd_store_operations_total", "Model store operations, by operation and result.",
      {"op", "result"});
  if (!ops.ok()) return ops.status();
  (*ops)->WithLabels({"publish", "ok"}).Increment();
  (*ops)->WithLabels({"delete", "error"}).Increment(2);

  absl::StatusOr<GaugeFamily*> jobs = registry.AddGauge(
      "bitloom_quantd_jobs", "Quantization jobs, by state.\nEscaped \\ help.", {"state"});
  if (!jobs.ok()) return jobs.status();
  (*jobs)->WithLabels({"running"}).Set(1);
  (*jobs)->WithLabels({"odd \"state\"\\\nname"}).Set(std::numeric_limits<double>::quiet_NaN());

  if (absl::Status s = registry.AddGaugeCallback("bitloom_quantd_store_artifacts",
                                                 "Artifacts in the model store.",
                                                 [] { return 3.0; });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = registry.AddLabeledGaugeCallback(
          "bitloom_inferd_pool_bytes", "VRAM pool bytes, by region.", {"region"},
          [] {
            return std::vector<LabeledValue>{{{"weights"}, 4e9},
                                             {{"kv_cache"}, 2e9},
                                             {{"workspace"}, 5e8},
                                             {{"free"}, 1.5e9}};
          });
      !s.ok()) {
    return s;
  }
  absl::StatusOr<GaugeFamily*> capacity = registry.AddGauge(
      "bitloom_inferd_pool_capacity_bytes", "VRAM pool capacity, in bytes.");
  if (!capacity.ok()) return capacity.status();
  (*capacity)->WithLabels({}).Set(std::numeric_limits<double>::infinity());

  absl::StatusOr<HistogramFamily*> sizes = registry.AddHistogram(
      "bitloom_sample_artifact_size_bytes", "Artifact sizes, in bytes.", {},
      ExponentialBuckets(1 << 20, 4, 8));
  if (!sizes.ok()) return sizes.status();
  (*sizes)->WithLabels({}).Observe(3e8);
  return absl::OkStatus();
}

}  // namespace

int main() {
  bitloom::metrics::MetricsRegistry registry;
  if (absl::Status status = BuildSample(registry); !status.ok()) {
    std::fprintf(stderr, "metrics_exposition_sample: %s\n", status.ToString().c_str());
    return 1;
  }
  const std::string text = registry.Serialize();
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}
