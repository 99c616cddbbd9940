// quantd: the quantization daemon. Flags -> Options -> server; see docs/OPERATIONS.md.
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "bitloom/core/logging.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/metrics/process_collector.h"
#include "bitloom/metrics/request_metrics.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/service/env_flags.h"
#include "bitloom/service/server_runner.h"
#include "bitloom/service/version.h"
#include "engine_runner_factory.h"
#include "job_manager.h"
#include "quantization_service.h"

ABSL_FLAG(std::string, listen_address, "0.0.0.0:50052", "gRPC listen address, host:port");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9092",
          "Prometheus /metrics address, host:port; empty disables it");
ABSL_FLAG(std::string, store_path, "./bitloom-store", "Model store directory");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(20),
          "How long in-flight RPCs may finish after SIGTERM");
ABSL_FLAG(std::string, ready_file, "", "Write {grpc_port, metrics_port} here once serving");
ABSL_FLAG(int, max_queued_jobs, 64, "Jobs that may wait to run; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, disk_reserve_bytes, 0,
          "Free bytes a new job must leave on the store's filesystem beyond its estimated need");
ABSL_FLAG(uint32_t, threads, 0, "Threads of the quantization pipeline; 0: one per core");

namespace {

int Fail(const absl::Status& status) {
  BITLOOM_LOG(ERROR) << status;
  return EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
  using bitloom::service::ServerRunner;
  ServerRunner::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "quantd: quantizes models into the Bitloom model store, over gRPC.\n"
      "Every flag can also be set as BITLOOM_QUANTD_<FLAG> in the environment.");
  if (absl::Status env = bitloom::service::ApplyEnvironmentToFlags(
          "BITLOOM_QUANTD", {"listen_address", "metrics_address", "store_path", "log_level",
                             "shutdown_grace", "ready_file", "max_queued_jobs",
                             "disk_reserve_bytes", "threads"});
      !env.ok()) {
    return Fail(env);
  }
  absl::ParseCommandLine(argc, argv);

  auto level = bitloom::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return Fail(level.status());
  bitloom::SetLogLevel(*level);

  auto store = bitloom::modelstore::ModelStore::Open(absl::GetFlag(FLAGS_store_path));
  if (!store.ok()) return Fail(store.status());

  bitloom::metrics::MetricsRegistry registry;
  if (absl::Status s = bitloom::metrics::ProcessCollector::Register(registry, "bitloom_quantd",
                                                                    bitloom::service::kVersion);
      !s.ok()) {
    return Fail(s);
  }
  auto request_metrics = bitloom::metrics::RequestMetrics::Create(registry, "bitloom_quantd");
  if (!request_metrics.ok()) return Fail(request_metrics.status());

  bitloom::quantd::JobManagerOptions job_options;
  job_options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  job_options.disk_reserve_bytes = absl::GetFlag(FLAGS_disk_reserve_bytes);
  job_options.threads = absl::GetFlag(FLAGS_threads);
  // The seam to the model code: the CPU engine runs the blocks the pipeline quantizes.
  auto jobs = bitloom::quantd::JobManager::Create(
      store->get(), bitloom::quantd::EngineRunnerFactory(), &registry, job_options);
  if (!jobs.ok()) return Fail(jobs.status());

  bitloom::quantd::QuantizationServiceImpl service(store->get(), jobs->get(), &registry);
  bitloom::service::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.ready_file = absl::GetFlag(FLAGS_ready_file);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.health_service_names = {"bitloom.v1.QuantizationService"};
  ServerRunner runner(options, &registry, &*request_metrics);
  if (absl::Status s = runner.Start({&service}); !s.ok()) return Fail(s);
  BITLOOM_LOG(INFO) << "quantd " << bitloom::service::kVersion << " store at "
                    << absl::GetFlag(FLAGS_store_path);
  // Drain: the running job stops at its next tensor and keeps its checkpoints (it resumes after a
  // restart); open WatchJob streams end with UNAVAILABLE so the server can finish draining.
  runner.WaitForTermination([&jobs] { (*jobs)->Drain(); });
  return EXIT_SUCCESS;
}
