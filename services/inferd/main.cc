// inferd: the inference daemon. Flags -> Options -> server; see docs/OPERATIONS.md.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/service/daemon_setup.h"
#include "bitloom/service/server_runner.h"
#include "bitloom/service/version.h"
#include "inference_service.h"
#include "memory_budget.h"
#include "served_models.h"
#include "serving_device.h"
#include "serving_metrics.h"

ABSL_FLAG(std::string, vram_budget, "0.9",
          "Memory pool size: a fraction of free device memory (0.9) or a size (24GiB). On the CPU "
          "engine it is taken from host memory.");
ABSL_FLAG(std::string, device, "auto",
          "Where models run: auto (the GPU when built with CUDA and one is visible), cpu, or gpu "
          "(refuses to start without one)");
ABSL_FLAG(bool, gpu_sampling, true,
          "GPU engine: sample decode steps on the GPU, so only token ids come back each step (false: "
          "every step's logits are copied to the host and sampled there; the same tokens)");
ABSL_FLAG(int, threads, 0,
          "CPU threads for the CPU engine's forward passes (shared by every model); 0 means one per "
          "core");

namespace {

int Fail(const absl::Status& status) {
  BITLOOM_LOG(ERROR) << status;
  return EXIT_FAILURE;
}

// The device the pool lives on. Without CUDA (this build's engine), host memory.
bitloom::v1::DeviceInfo HostDevice(uint64_t* free_bytes) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  bitloom::v1::DeviceInfo device;
  device.set_name("host");
  device.set_kind("cpu");
  device.set_total_memory_bytes(page * static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)));
  *free_bytes = page * static_cast<uint64_t>(::sysconf(_SC_AVPHYS_PAGES));
  return device;
}

}  // namespace

int main(int argc, char** argv) {
  const bitloom::service::DaemonIdentity identity{
      .name = "inferd",
      .default_listen_address = "0.0.0.0:50051",
      .default_metrics_address = "0.0.0.0:9091",
      .health_service_names = {"bitloom.v1.InferenceService"},
      .extra_flags = {"vram_budget", "threads", "device", "gpu_sampling"},
      .usage = "inferd: serves Bitloom artifacts over gRPC."};
  if (absl::Status s = bitloom::service::InitDaemon(identity, argc, argv); !s.ok()) return Fail(s);
  auto budget = bitloom::inferd::ParseMemoryBudget(absl::GetFlag(FLAGS_vram_budget));
  if (!budget.ok()) return Fail(budget.status());
  auto serving_device = bitloom::inferd::ResolveServingDevice(absl::GetFlag(FLAGS_device));
  if (!serving_device.ok()) return Fail(serving_device.status());

  auto store = bitloom::service::OpenStoreFromFlags();
  if (!store.ok()) return Fail(store.status());

  uint64_t free_bytes = 0;
  bitloom::v1::DeviceInfo device = HostDevice(&free_bytes);
  uint64_t pool_bytes = budget->Resolve(free_bytes);
  // On the GPU the pool is one device allocation, made now and never again.
  std::unique_ptr<bitloom::engine::VramPool> vram_pool;
  if (*serving_device == bitloom::inferd::ServingDevice::kGpu) {
    auto pool = bitloom::inferd::CreateDevicePool(*budget, &device);
    if (!pool.ok()) return Fail(pool.status());
    vram_pool = *std::move(pool);
    pool_bytes = vram_pool->capacity();
  }

  auto telemetry = bitloom::service::DaemonTelemetry::Create(identity.name);
  if (!telemetry.ok()) return Fail(telemetry.status());
  bitloom::metrics::MetricsRegistry& registry = (*telemetry)->registry();
  auto serving_metrics = bitloom::inferd::ServingMetrics::Register(registry);
  if (!serving_metrics.ok()) return Fail(serving_metrics.status());

  // The calling thread of a forward pass works too (ThreadPool::ParallelFor), so the pool gets one
  // thread fewer than asked; with one thread there is no pool at all.
  const int requested_threads = absl::GetFlag(FLAGS_threads);
  if (requested_threads < 0) {
    return Fail(absl::InvalidArgumentError("--threads: must be >= 0"));
  }
  const int threads = requested_threads > 0
                          ? requested_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_ptr<bitloom::ThreadPool> engine_threads;
  if (threads > 1) engine_threads = std::make_unique<bitloom::ThreadPool>(threads - 1);

  bitloom::inferd::ServedModels models(store->get(), pool_bytes, engine_threads.get(),
                                       serving_metrics->get(), vram_pool.get(),
                                       absl::GetFlag(FLAGS_gpu_sampling));
  bitloom::inferd::InferenceServiceImpl service(&models, &registry, device);
  bitloom::service::ServerRunner runner(bitloom::service::ServerOptionsFromFlags(identity), &registry,
                                       &(*telemetry)->request_metrics());
  if (absl::Status s = runner.Start({&service}); !s.ok()) return Fail(s);
  BITLOOM_LOG(INFO) << "inferd " << bitloom::service::kVersion << " store at "
                    << bitloom::service::StorePathFromFlags() << ", pool " << pool_bytes << " bytes on "
                    << device.name();
  // Drain: new requests are refused at once; admitted and queued ones keep running until shortly
  // before the runner's grace deadline, when the schedulers end them with FINISH_REASON_CANCELLED, so
  // clients get a clean last message rather than a transport-level cancel.
  const absl::Duration grace = bitloom::service::ShutdownGraceFromFlags();
  runner.WaitForTermination([&models, grace] {
    models.Drain(absl::Now() + grace - std::min(grace / 10, absl::Seconds(1)));
  });
  return EXIT_SUCCESS;
}
