// Health checks over grpc.health.v1, for the CLI and the integration tests.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/time/time.h"

namespace bitloom::tools {

// "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN", or "<CODE>: <message>" when the call fails.
std::string CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                        absl::Duration timeout);

// The gRPC status code's name ("NOT_FOUND").
const char* CodeName(grpc::StatusCode code);

}  // namespace bitloom::tools
