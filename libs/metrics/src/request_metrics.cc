#include "bitloom/metrics/request_metrics.h"

#include <string>

#include "bitloom/core/status_macros.h"

namespace bitloom::metrics {

const std::vector<double>& RequestMetrics::DurationBuckets() {
  static const std::vector<double>* const kBuckets = new std::vector<double>{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
      1,     2.5,    5,     10,   30,    60,   120, 300,  600};
  return *kBuckets;
}

absl::StatusOr<RequestMetrics> RequestMetrics::Create(MetricsRegistry& registry,
                                                      std::string_view prefix) {
  const std::string p(prefix);
  BITLOOM_ASSIGN_OR_RETURN(
      CounterFamily * requests,
      registry.AddCounter(p + "_grpc_requests_total",
                          "Finished gRPC requests, by full method name and status code name.",
                          {"method", "code"}));
  BITLOOM_ASSIGN_OR_RETURN(
      HistogramFamily * durations,
      registry.AddHistogram(p + "_grpc_request_duration_seconds",
                            "Wall time of finished gRPC requests, in seconds, by full method name.",
                            {"method"}, DurationBuckets()));
  BITLOOM_ASSIGN_OR_RETURN(
      GaugeFamily * in_flight,
      registry.AddGauge(p + "_grpc_requests_in_flight",
                        "gRPC requests started and not yet finished, by full method name.",
                        {"method"}));
  return RequestMetrics(requests, durations, in_flight);
}

void RequestMetrics::Begin(std::string_view method) { in_flight_->WithLabels({method}).Increment(); }

void RequestMetrics::End(std::string_view method, std::string_view code, double seconds) {
  in_flight_->WithLabels({method}).Decrement();
  requests_->WithLabels({method, code}).Increment();
  durations_->WithLabels({method}).Observe(seconds);
}

}  // namespace bitloom::metrics
