#include "health_client.h"

#include "absl/strings/str_cat.h"
#include "bitloom/service/grpc_status.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace bitloom::tools {

std::string CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                        absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

const char* CodeName(grpc::StatusCode code) { return service::GrpcCodeName(code); }

}  // namespace bitloom::tools
