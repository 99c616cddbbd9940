// The start-up every Bitloom daemon shares: the common flags (defined once, here), their environment
// variables, the log level, the model store, and the telemetry (process, build and per-RPC metrics).
//
// Common flags: --listen_address, --metrics_address, --store_path, --log_level, --shutdown_grace,
// --ready_file. A daemon sets its own default ports (DaemonIdentity), names its extra flags, and calls
// InitDaemon() first thing in main(); each flag can then also be set as <env_prefix>_<FLAG>, with the
// command line winning. Not thread-safe: call from main() before any other thread exists.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/metrics/request_metrics.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/service/server_runner.h"

namespace bitloom::service {

struct DaemonIdentity {
  // "quantd" or "inferd": the metric prefix is bitloom_<name>, the environment prefix BITLOOM_<NAME>.
  std::string name;
  std::string default_listen_address;
  std::string default_metrics_address;
  // Fully-qualified gRPC service names reported by grpc.health.v1.
  std::vector<std::string> health_service_names;
  // The daemon's own flags that may also come from the environment.
  std::vector<std::string> extra_flags;
  std::string usage;
};

// Blocks SIGTERM/SIGINT (ServerRunner::BlockTerminationSignals), applies the defaults, the
// environment and the command line, and sets the log level. INVALID_ARGUMENT names the bad flag or
// environment variable.
absl::Status InitDaemon(const DaemonIdentity& identity, int argc, char** argv);

// The common flags as ServerRunner options.
ServerOptions ServerOptionsFromFlags(const DaemonIdentity& identity);
std::string StorePathFromFlags();
absl::Duration ShutdownGraceFromFlags();

// Opens (creating if needed) the store at --store_path.
absl::StatusOr<std::unique_ptr<modelstore::ModelStore>> OpenStoreFromFlags();

// The metrics registry of a daemon with the process collector, build info and per-RPC metrics
// registered under bitloom_<name>.
class DaemonTelemetry {
 public:
  static absl::StatusOr<std::unique_ptr<DaemonTelemetry>> Create(const std::string& daemon_name);

  metrics::MetricsRegistry& registry() { return registry_; }
  metrics::RequestMetrics& request_metrics() { return *request_metrics_; }

 private:
  DaemonTelemetry() = default;

  metrics::MetricsRegistry registry_;
  std::unique_ptr<metrics::RequestMetrics> request_metrics_;
};

}  // namespace bitloom::service
