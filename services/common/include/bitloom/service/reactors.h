// Small gRPC callback-API helpers shared by the services.
#pragma once

#include <grpcpp/grpcpp.h>

namespace bitloom::service {

// A server-streaming reactor that ends the call at once with `status`, writing nothing: for
// streaming RPCs whose request is rejected before any event exists. Deletes itself when done.
template <typename Response>
class RejectedWriteReactor final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit RejectedWriteReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

// Finishes a unary call with `status` using the context's default reactor.
inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                             const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace bitloom::service
