#include "bitloom/service/server_runner.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bitloom/core/logging.h"
#include "bitloom/service/metrics_interceptor.h"

namespace bitloom::service {

void ServerRunner::BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

ServerRunner::ServerRunner(ServerOptions options, metrics::MetricsRegistry* registry,
                           metrics::RequestMetrics* request_metrics)
    : options_(std::move(options)), registry_(registry), request_metrics_(request_metrics) {}

ServerRunner::~ServerRunner() {
  if (server_ != nullptr && !shut_down_) Shutdown([] {});
}

int ServerRunner::metrics_port() const {
  return metrics_server_ != nullptr ? metrics_server_->port() : 0;
}

absl::Status ServerRunner::Start(const std::vector<grpc::Service*>& services) {
  if (!options_.metrics_address.empty()) {
    metrics_server_ = std::make_unique<metrics::MetricsHttpServer>(registry_);
    metrics_server_->SetReadinessCheck([this] { return ready_.load(); });
    absl::Status started = metrics_server_->Start(options_.metrics_address);
    if (!started.ok()) {
      return absl::Status(started.code(),
                          absl::StrCat("--metrics_address: ", started.message()));
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address, grpc::InsecureServerCredentials(),
                           &grpc_port_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<MetricsInterceptorFactory>(request_metrics_, &in_flight_));
  builder.experimental().SetInterceptorCreators(std::move(factories));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat(
        "--listen_address: could not listen on '", options_.listen_address,
        "' (malformed, or the port is in use)"));
  }
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const std::string& name : options_.health_service_names) {
    health->SetServingStatus(name, true);
  }
  ready_ = true;
  BITLOOM_LOG(INFO) << "serving gRPC on port " << grpc_port_
                    << (metrics_server_ ? absl::StrCat(", metrics on port ", metrics_port())
                                        : std::string(", metrics disabled"));
  return WriteReadyFile();
}

absl::Status ServerRunner::WriteReadyFile() const {
  if (options_.ready_file.empty()) return absl::OkStatus();
  const std::string temp = absl::StrCat(options_.ready_file, ".tmp.", ::getpid());
  {
    std::ofstream out(temp, std::ios::trunc);
    out << "{\"grpc_port\": " << grpc_port_ << ", \"metrics_port\": " << metrics_port() << "}\n";
    if (!out.flush()) {
      return absl::InternalError(absl::StrCat("--ready_file: cannot write ", temp));
    }
  }
  if (std::rename(temp.c_str(), options_.ready_file.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("--ready_file: cannot rename ", temp, " to ",
                                            options_.ready_file, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void ServerRunner::WaitForTermination(const std::function<void()>& on_drain) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int signal_number = 0;
  while (sigwait(&set, &signal_number) != 0) {
  }
  BITLOOM_LOG(INFO) << "received " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
                    << ", draining (grace " << absl::FormatDuration(options_.shutdown_grace)
                    << ")";
  Shutdown(on_drain);
}

void ServerRunner::Shutdown(const std::function<void()>& on_drain) {
  if (shut_down_) return;
  shut_down_ = true;
  ready_ = false;
  if (server_ != nullptr) {
    // Health first, so load balancers stop routing here while in-flight work drains.
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    for (const std::string& name : options_.health_service_names) {
      health->SetServingStatus(name, false);
    }
    health->SetServingStatus(false);
  }
  const absl::Time deadline = absl::Now() + options_.shutdown_grace;
  on_drain();
  while (in_flight_.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  if (in_flight_.load() > 0) {
    BITLOOM_LOG(WARNING) << "grace period over; cancelling " << in_flight_.load()
                         << " RPCs in flight";
  }
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(100)));
    server_->Wait();
  }
  if (metrics_server_ != nullptr) metrics_server_->Stop();
  BITLOOM_LOG(INFO) << "shut down";
}

}  // namespace bitloom::service
