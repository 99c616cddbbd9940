// The one place where library errors (absl::Status) become gRPC statuses, and back.
//
// absl's canonical codes and gRPC's share their numbering, so the mapping keeps the code and the
// message; it exists as a function so that every service maps identically and a future change
// (for example attaching error details) happens here only.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace bitloom::service {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// "OK", "INVALID_ARGUMENT", ... as Prometheus labels and logs spell them.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace bitloom::service
