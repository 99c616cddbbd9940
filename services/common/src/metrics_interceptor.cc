#include "bitloom/service/metrics_interceptor.h"

#include <chrono>
#include <string>

#include "bitloom/service/grpc_status.h"

namespace bitloom::service {
namespace {

using grpc::experimental::InterceptionHookPoints;

// One per RPC; gRPC deletes it when the RPC is done. The status is recorded when it is sent; an RPC
// that ends without sending one (the client went away) counts as CANCELLED.
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
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_->End(method_, GrpcCodeName(code_), seconds);
    in_flight_->fetch_sub(1);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      code_ = methods->GetSendStatus().error_code();
    }
    methods->Proceed();
  }

 private:
  metrics::RequestMetrics* metrics_;
  std::atomic<int64_t>* in_flight_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
  grpc::StatusCode code_ = grpc::StatusCode::CANCELLED;
};

}  // namespace

grpc::experimental::Interceptor* MetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new MetricsInterceptor(metrics_, in_flight_, info->method() ? info->method() : "unknown");
}

}  // namespace bitloom::service
