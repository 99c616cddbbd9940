#include "inference_service.h"

#include "absl/strings/str_cat.h"
#include "bitloom/service/grpc_status.h"
#include "bitloom/service/reactors.h"
#include "bitloom/service/version.h"

namespace bitloom::inferd {
namespace {

using service::FinishUnary;
using service::ToGrpcStatus;

}  // namespace

InferenceServiceImpl::InferenceServiceImpl(ServedModels* models,
                                           metrics::MetricsRegistry* registry,
                                           v1::DeviceInfo device)
    : models_(models), device_(std::move(device)) {
  (void)registry->AddGaugeCallback("bitloom_inferd_models_loaded", "Models loaded and served.",
                                   [models] { return static_cast<double>(models->List().size()); });
  (void)registry->AddGaugeCallback(
      "bitloom_inferd_pool_capacity_bytes", "Capacity of the memory pool, in bytes.",
      [models] { return static_cast<double>(models->Usage().capacity_bytes); });
  (void)registry->AddLabeledGaugeCallback(
      "bitloom_inferd_pool_bytes", "Bytes of the memory pool by region.", {"region"}, [models] {
        const PoolUsage usage = models->Usage();
        return std::vector<metrics::LabeledValue>{
            {{"weights"}, static_cast<double>(usage.weight_bytes)},
            {{"kv_cache"}, static_cast<double>(usage.kv_cache_bytes)},
            {{"free"}, static_cast<double>(usage.free_bytes())}};
      });
}

absl::Status InferenceServiceImpl::NotYetServed(const std::string& model_id,
                                                const char* rpc) const {
  auto model = models_->Find(model_id);
  if (!model.ok()) return model.status();
  return absl::UnimplementedError(
      absl::StrCat(rpc, ": this build of inferd has no generation engine yet"));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                          const v1::LoadModelRequest* request,
                                                          v1::LoadModelResponse* response) {
  auto info = models_->Load(*request);
  if (info.ok()) *response->mutable_model() = *std::move(info);
  return FinishUnary(context, ToGrpcStatus(info.status()));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                            const v1::UnloadModelRequest* request,
                                                            v1::UnloadModelResponse* /*response*/) {
  return FinishUnary(context, ToGrpcStatus(models_->Unload(request->model_id())));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                           const v1::ListModelsRequest* /*request*/,
                                                           v1::ListModelsResponse* response) {
  for (v1::ModelInfo& info : models_->List()) *response->add_models() = std::move(info);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceServiceImpl::Generate(
    grpc::CallbackServerContext* /*context*/, const v1::GenerateRequest* request) {
  return new service::RejectedWriteReactor<v1::GenerateResponse>(
      ToGrpcStatus(NotYetServed(request->model_id(), "Generate")));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceServiceImpl::Chat(
    grpc::CallbackServerContext* /*context*/, const v1::ChatRequest* request) {
  return new service::RejectedWriteReactor<v1::GenerateResponse>(
      ToGrpcStatus(NotYetServed(request->model_id(), "Chat")));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                         const v1::TokenizeRequest* request,
                                                         v1::TokenizeResponse* /*response*/) {
  return FinishUnary(context, ToGrpcStatus(NotYetServed(request->model_id(), "Tokenize")));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Detokenize(grpc::CallbackServerContext* context,
                                                           const v1::DetokenizeRequest* request,
                                                           v1::DetokenizeResponse* /*response*/) {
  return FinishUnary(context, ToGrpcStatus(NotYetServed(request->model_id(), "Detokenize")));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ScoreTokens(grpc::CallbackServerContext* context,
                                                            const v1::ScoreTokensRequest* request,
                                                            v1::ScoreTokensResponse* /*response*/) {
  return FinishUnary(context, ToGrpcStatus(NotYetServed(request->model_id(), "ScoreTokens")));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetServerInfo(
    grpc::CallbackServerContext* context, const v1::GetServerInfoRequest* /*request*/,
    v1::ServerInfo* response) {
  response->set_version(service::kVersion);
  *response->add_devices() = device_;
  const PoolUsage usage = models_->Usage();
  response->set_pool_bytes(usage.capacity_bytes);
  response->set_pool_used_bytes(usage.weight_bytes + usage.kv_cache_bytes);
  for (v1::ModelInfo& info : models_->List()) *response->add_models() = std::move(info);
  response->set_generation_available(false);
  return FinishUnary(context, grpc::Status::OK);
}

}  // namespace bitloom::inferd
