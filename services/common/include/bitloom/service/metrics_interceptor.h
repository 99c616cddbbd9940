// A gRPC server interceptor that feeds RequestMetrics (requests by method and status code, latency
// by method, requests in flight) and keeps the process-wide count of RPCs in flight that
// ServerRunner waits on when it drains. Installed by ServerRunner on every daemon.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <atomic>
#include <cstdint>

#include "bitloom/metrics/request_metrics.h"

namespace bitloom::service {

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // Neither pointer is owned; both must outlive the server.
  MetricsInterceptorFactory(metrics::RequestMetrics* metrics, std::atomic<int64_t>* in_flight)
      : metrics_(metrics), in_flight_(in_flight) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::RequestMetrics* metrics_;
  std::atomic<int64_t>* in_flight_;
};

}  // namespace bitloom::service
