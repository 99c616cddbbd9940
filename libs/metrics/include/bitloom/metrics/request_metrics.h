// RequestMetrics: the per-RPC metrics every Bitloom daemon exports, without depending on gRPC.
//
// Create() registers, under `prefix`:
//   <prefix>_grpc_requests_total{method,code}          counter    finished RPCs by status code name
//   <prefix>_grpc_request_duration_seconds{method}     histogram  RPC latency, 1 ms .. 10 min buckets
//   <prefix>_grpc_requests_in_flight{method}           gauge      RPCs started and not yet finished
// The service's gRPC glue calls Begin(method) when an RPC starts and End(method, code, seconds) when
// it finishes, exactly once each. The object holds pointers into the registry, which must outlive it;
// it is cheap to copy. Thread-safe: each call looks its children up under the families' mutexes (a
// map lookup, negligible next to an RPC) and then records lock-free.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/metrics/metrics_registry.h"

namespace bitloom::metrics {

class RequestMetrics {
 public:
  // Fails as MetricsRegistry::Add* do, e.g. when called twice with one prefix on one registry.
  static absl::StatusOr<RequestMetrics> Create(MetricsRegistry& registry, std::string_view prefix);

  // `method` is the full gRPC method name, e.g. "/bitloom.v1.Inference/Generate".
  void Begin(std::string_view method);
  // `code` is the canonical status code name, e.g. "OK", "INVALID_ARGUMENT"; `seconds` the RPC's
  // wall time from Begin.
  void End(std::string_view method, std::string_view code, double seconds);

  // The duration buckets: 1 ms .. 10 min, roughly 1-2.5-5 per decade; covers a health check and a
  // long streamed generation or a quantization-job watch.
  static const std::vector<double>& DurationBuckets();

 private:
  RequestMetrics(CounterFamily* requests, HistogramFamily* durations, GaugeFamily* in_flight)
      : requests_(requests), durations_(durations), in_flight_(in_flight) {}

  CounterFamily* requests_;
  HistogramFamily* durations_;
  GaugeFamily* in_flight_;
};

}  // namespace bitloom::metrics
