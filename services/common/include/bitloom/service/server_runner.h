// ServerRunner: the lifecycle every Bitloom daemon shares.
//
// It builds the gRPC server (callback services, grpc.health.v1 with a status per service, server
// reflection, the request-metrics interceptor), starts the Prometheus endpoint, optionally writes a
// ready file with the bound ports, then waits for SIGTERM or SIGINT. On a signal it marks every
// service NOT_SERVING, fails readiness, runs the daemon's drain hook, waits until no RPC is in
// flight or the grace period ends, and then shuts the server down, cancelling what is left. (gRPC's
// own Shutdown(deadline) waits for idle client connections too, so it is only called once the
// server is drained.) Not thread-safe: one thread drives it, from main().
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bitloom/metrics/metrics_http_server.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/metrics/request_metrics.h"

namespace bitloom::service {

struct ServerOptions {
  // gRPC listen address, "host:port"; port 0 picks a free port (see grpc_port()).
  std::string listen_address = "0.0.0.0:50051";
  // Prometheus endpoint address, "host:port"; empty disables it.
  std::string metrics_address = "0.0.0.0:9090";
  // When non-empty, written (atomically) once serving: {"grpc_port": N, "metrics_port": M}.
  std::string ready_file;
  // How long in-flight RPCs may run after SIGTERM before they are cancelled.
  absl::Duration shutdown_grace = absl::Seconds(20);
  // Fully-qualified gRPC service names reported by grpc.health.v1 ("bitloom.v1.InferenceService").
  std::vector<std::string> health_service_names;
};

class ServerRunner {
 public:
  // Blocks SIGTERM and SIGINT in the calling thread so that every thread created afterwards inherits
  // the mask and WaitForTermination() alone receives them. Call first thing in main().
  static void BlockTerminationSignals();

  ServerRunner(ServerOptions options, metrics::MetricsRegistry* registry,
               metrics::RequestMetrics* request_metrics);
  ~ServerRunner();

  // Binds and starts serving `services` (not owned; they must outlive the runner).
  absl::Status Start(const std::vector<grpc::Service*>& services);
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const;

  // Blocks until SIGTERM or SIGINT, then drains: health NOT_SERVING, `on_drain` (cancel or finish
  // background work), server shutdown with the grace deadline, metrics endpoint stopped.
  void WaitForTermination(const std::function<void()>& on_drain);

  // The drain sequence without waiting for a signal (tests, fatal errors).
  void Shutdown(const std::function<void()>& on_drain);

 private:
  absl::Status WriteReadyFile() const;

  ServerOptions options_;
  metrics::MetricsRegistry* registry_;
  metrics::RequestMetrics* request_metrics_;
  std::unique_ptr<metrics::MetricsHttpServer> metrics_server_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> ready_{false};
  std::atomic<int64_t> in_flight_{0};
  int grpc_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace bitloom::service
