// quantd: the quantization daemon. Flags -> Options -> server; see docs/OPERATIONS.md.
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "bitloom/core/logging.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/service/daemon_setup.h"
#include "bitloom/service/server_runner.h"
#include "bitloom/service/version.h"
#include "job_manager.h"
#include "quant_device.h"
#include "quantization_service.h"

ABSL_FLAG(int, max_queued_jobs, 64, "Jobs that may wait to run; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, disk_reserve_bytes, 0,
          "Free bytes a new job must leave on the store's filesystem beyond its estimated need");
ABSL_FLAG(uint32_t, threads, 0, "Threads of the quantization pipeline; 0: one per core");
ABSL_FLAG(std::string, device, "auto",
          "Where Hessians and LDLQ run: auto (the GPU when built with CUDA and one is visible), "
          "cpu, or gpu (refuses to start without one)");

namespace {

int Fail(const absl::Status& status) {
  BITLOOM_LOG(ERROR) << status;
  return EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
  const bitloom::service::DaemonIdentity identity{
      .name = "quantd",
      .default_listen_address = "0.0.0.0:50052",
      .default_metrics_address = "0.0.0.0:9092",
      .health_service_names = {"bitloom.v1.QuantizationService"},
      .extra_flags = {"max_queued_jobs", "disk_reserve_bytes", "threads", "device"},
      .usage = "quantd: quantizes models into the Bitloom model store, over gRPC."};
  if (absl::Status s = bitloom::service::InitDaemon(identity, argc, argv); !s.ok()) return Fail(s);
  auto device = bitloom::quantd::ResolveQuantDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  auto store = bitloom::service::OpenStoreFromFlags();
  if (!store.ok()) return Fail(store.status());
  auto telemetry = bitloom::service::DaemonTelemetry::Create(identity.name);
  if (!telemetry.ok()) return Fail(telemetry.status());
  bitloom::metrics::MetricsRegistry& registry = (*telemetry)->registry();

  bitloom::quantd::JobManagerOptions job_options;
  job_options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  job_options.disk_reserve_bytes = absl::GetFlag(FLAGS_disk_reserve_bytes);
  job_options.threads = absl::GetFlag(FLAGS_threads);
  job_options.device = *device;
  // The seam to the model code: the blocks the pipeline quantizes run on the device the Hessians
  // and LDLQ run on (the GPU forwards over the CPU engine's model, or the CPU engine itself).
  auto jobs = bitloom::quantd::JobManager::Create(
      store->get(), bitloom::quantd::RunnerFactoryFor(*device), &registry, job_options);
  if (!jobs.ok()) return Fail(jobs.status());

  bitloom::quantd::QuantizationServiceImpl service(store->get(), jobs->get(), &registry);
  bitloom::service::ServerRunner runner(bitloom::service::ServerOptionsFromFlags(identity), &registry,
                                       &(*telemetry)->request_metrics());
  if (absl::Status s = runner.Start({&service}); !s.ok()) return Fail(s);
  BITLOOM_LOG(INFO) << "quantd " << bitloom::service::kVersion << " store at "
                    << bitloom::service::StorePathFromFlags() << ", quantizing on the "
                    << (*device == bitloom::quantd::QuantDevice::kGpu ? "GPU" : "CPU");
  // Drain: the running job stops at its next tensor and keeps its checkpoints (it resumes after a
  // restart); open WatchJob streams end with UNAVAILABLE so the server can finish draining.
  runner.WaitForTermination([&jobs] { (*jobs)->Drain(); });
  return EXIT_SUCCESS;
}
