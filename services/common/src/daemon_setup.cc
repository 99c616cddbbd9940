#include "bitloom/service/daemon_setup.h"

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/metrics/process_collector.h"
#include "bitloom/service/env_flags.h"
#include "bitloom/service/version.h"

ABSL_FLAG(std::string, listen_address, "",
          "gRPC listen address, host:port (default inferd 0.0.0.0:50051, quantd 0.0.0.0:50052)");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus /metrics, /healthz, /readyz address, host:port; empty disables it (default "
          "inferd 0.0.0.0:9091, quantd 0.0.0.0:9092)");
ABSL_FLAG(std::string, store_path, "./bitloom-store", "Model store directory");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(20),
          "How long in-flight requests may finish after SIGTERM");
ABSL_FLAG(std::string, ready_file, "", "Write {grpc_port, metrics_port} here once serving");

namespace bitloom::service {

absl::Status InitDaemon(const DaemonIdentity& identity, int argc, char** argv) {
  ServerRunner::BlockTerminationSignals();
  const std::string env_prefix = absl::StrCat("BITLOOM_", absl::AsciiStrToUpper(identity.name));
  absl::SetProgramUsageMessage(absl::StrCat(
      identity.usage, "\nEvery flag can also be set as ", env_prefix, "_<FLAG> in the environment."));
  // Defaults first, then the environment, then the command line: each overrides the one before.
  absl::SetFlag(&FLAGS_listen_address, identity.default_listen_address);
  absl::SetFlag(&FLAGS_metrics_address, identity.default_metrics_address);
  std::vector<std::string> flags = {"listen_address", "metrics_address", "store_path",
                                    "log_level",      "shutdown_grace",  "ready_file"};
  flags.insert(flags.end(), identity.extra_flags.begin(), identity.extra_flags.end());
  BITLOOM_RETURN_IF_ERROR(ApplyEnvironmentToFlags(env_prefix, flags));
  absl::ParseCommandLine(argc, argv);
  BITLOOM_ASSIGN_OR_RETURN(LogLevel level, ParseLogLevel(absl::GetFlag(FLAGS_log_level)));
  SetLogLevel(level);
  return absl::OkStatus();
}

ServerOptions ServerOptionsFromFlags(const DaemonIdentity& identity) {
  ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.ready_file = absl::GetFlag(FLAGS_ready_file);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.health_service_names = identity.health_service_names;
  return options;
}

std::string StorePathFromFlags() { return absl::GetFlag(FLAGS_store_path); }

absl::Duration ShutdownGraceFromFlags() { return absl::GetFlag(FLAGS_shutdown_grace); }

absl::StatusOr<std::unique_ptr<modelstore::ModelStore>> OpenStoreFromFlags() {
  return modelstore::ModelStore::Open(StorePathFromFlags());
}

absl::StatusOr<std::unique_ptr<DaemonTelemetry>> DaemonTelemetry::Create(
    const std::string& daemon_name) {
  std::unique_ptr<DaemonTelemetry> telemetry(new DaemonTelemetry());
  const std::string prefix = absl::StrCat("bitloom_", daemon_name);
  BITLOOM_RETURN_IF_ERROR(
      metrics::ProcessCollector::Register(telemetry->registry_, prefix, kVersion));
  BITLOOM_ASSIGN_OR_RETURN(metrics::RequestMetrics request_metrics,
                           metrics::RequestMetrics::Create(telemetry->registry_, prefix));
  telemetry->request_metrics_ =
      std::make_unique<metrics::RequestMetrics>(std::move(request_metrics));
  return telemetry;
}

}  // namespace bitloom::service
