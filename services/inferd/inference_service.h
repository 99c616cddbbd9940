// InferenceServiceImpl: the gRPC transport of inferd, thin code over ServedModels and each model's
// ModelScheduler.
//
// Requests are validated here, against the proto's documented limits and the loaded model (every
// message names the field and the limit), converted to token ids, and handed to the model's
// scheduler; Generate and Chat stream through a GenerateReactor, ScoreTokens finishes its unary
// reactor from the scheduler thread. Tokenize and Detokenize are cheap and bounded (1 MiB of text,
// one id per token), so they run on the gRPC thread. No RPC method blocks on generation.
// Thread-safe: gRPC calls the methods concurrently.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/engine/generation_params.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "served_models.h"

namespace bitloom::inferd {

class GenerateReactor;

inline constexpr size_t kMaxPromptTextBytes = 4u << 20;    // GenerateRequest.text
inline constexpr size_t kMaxTokenizeTextBytes = 1u << 20;  // TokenizeRequest.text
inline constexpr int kMaxChatMessages = 1024;

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
  // Validates sampling against the model and the prompt, and queues the generation on `reactor`.
  absl::Status StartGeneration(const ServedModel& model, std::vector<int32_t> prompt,
                               const v1::SamplingParams& sampling,
                               std::shared_ptr<GenerateReactor> reactor);

  ServedModels* models_;
  v1::DeviceInfo device_;
};

}  // namespace bitloom::inferd
