#include "bitloom/service/metrics_interceptor.h"

#include <chrono>
#include <string>

#include "bitloom/service/grpc_status.h"

namespace bitloom::service {
namespace {

using grpc::experimental::InterceptionHookPoints;

// One per RPC; gRPC deletes it when the RPC is done. The request is counted when its status is sent;
// an RPC that ends without sending one (the client went away) counts as CANCELLED. It stays "in
// flight" for the drain until gRPC is completely done with it.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(metrics::RequestMetrics* metrics, std::atomic<int64_t>* in_flight,
                     std::string method)
      : metrics_(metrics),
        in_flight_(in_flight),
        method_(std::move(method)),
        start_(std::chrono::steady_clock::now()) {
    in_flight_->fetch_add(1);
    metrics_->Begin(method_);
  }

  ~MetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
    in_flight_->fetch_sub(1);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    // Recorded before the status goes out, so a client that has its answer also sees it counted.
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_->End(method_, GrpcCodeName(code), seconds);
  }

  metrics::RequestMetrics* metrics_;
  std::atomic<int64_t>* in_flight_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;
};

}  // namespace

grpc::experimental::Interceptor* MetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new MetricsInterceptor(metrics_, in_flight_, info->method() ? info->method() : "unknown");
}

}  // namespace bitloom::service
