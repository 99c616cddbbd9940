// InferenceService: the gRPC transport of inferd. Model loading, listing and pool accounting work now;
// generation, chat, tokenization and scoring answer UNIMPLEMENTED (after checking the model is
// loaded) until the engine lands. Thread-safe: gRPC calls the methods concurrently.
#pragma once

#include <grpcpp/grpcpp.h>

#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "served_models.h"

namespace bitloom::inferd {

class InferenceServiceImpl final : public v1::InferenceService::CallbackService {
 public:
  // `models` and `registry` are not owned and must outlive the service.
  InferenceServiceImpl(ServedModels* models, metrics::MetricsRegistry* registry,
                       v1::DeviceInfo device);

  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ScoreTokens(grpc::CallbackServerContext* context,
                                        const v1::ScoreTokensRequest* request,
                                        v1::ScoreTokensResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;

 private:
  // NOT_FOUND when the model is not loaded, else UNIMPLEMENTED naming the RPC.
  absl::Status NotYetServed(const std::string& model_id, const char* rpc) const;

  ServedModels* models_;
  v1::DeviceInfo device_;
};

}  // namespace bitloom::inferd
