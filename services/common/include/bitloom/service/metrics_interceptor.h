// A gRPC server interceptor that feeds RequestMetrics: requests by method and status code, latency
// by method, and requests in flight. Installed by ServerRunner on every daemon.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include "bitloom/metrics/request_metrics.h"

namespace bitloom::service {

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(metrics::RequestMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::RequestMetrics* metrics_;
};

}  // namespace bitloom::service
