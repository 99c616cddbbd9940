#include "inference_service.h"

#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bitloom/service/grpc_status.h"
#include "bitloom/service/reactors.h"
#include "bitloom/service/version.h"
#include "generate_reactor.h"

namespace bitloom::inferd {
namespace {

using service::FinishUnary;
using service::ToGrpcStatus;

// ScoreTokens' observer: finishes the unary call from the scheduler thread. The call, and with it
// `context` and `response`, stays alive until Finish, which is the terminal callback's last act.
class ScoreObserver final : public RequestObserver {
 public:
  ScoreObserver(grpc::CallbackServerContext* context, v1::ScoreTokensResponse* response)
      : context_(context), response_(response), reactor_(context->DefaultReactor()) {}

  bool Cancelled() const override { return context_->IsCancelled(); }
  void OnResponse(v1::GenerateResponse /*response*/, bool /*last*/) override {
    reactor_->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "a scoring request received tokens"));
  }
  void OnScores(engine::TokenScores scores) override {
    response_->mutable_logprobs()->Reserve(static_cast<int>(scores.logprobs.size()));
    for (const float logprob : scores.logprobs) response_->add_logprobs(logprob);
    for (const bool greedy : scores.greedy) response_->add_greedy(greedy);
    reactor_->Finish(grpc::Status::OK);
  }
  void OnFailed(absl::Status status) override { reactor_->Finish(ToGrpcStatus(status)); }

 private:
  grpc::CallbackServerContext* context_;
  v1::ScoreTokensResponse* response_;
  grpc::ServerUnaryReactor* reactor_;
};

// INVALID_ARGUMENT naming `field` and its index when an id is outside the model's vocabulary.
absl::Status CheckIds(const char* field, const google::protobuf::RepeatedField<uint32_t>& ids,
                      uint32_t vocab_size, std::vector<int32_t>* out) {
  out->reserve(ids.size());
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: token id ", ids[i], " is outside [0, ", vocab_size, ")"));
    }
    out->push_back(static_cast<int32_t>(ids[i]));
  }
  return absl::OkStatus();
}

absl::Status WithField(const char* field, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(field, ": ", status.message()));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* Rejected(const absl::Status& status) {
  return new service::RejectedWriteReactor<v1::GenerateResponse>(ToGrpcStatus(status));
}

}  // namespace

InferenceServiceImpl::InferenceServiceImpl(ServedModels* models, metrics::MetricsRegistry* registry,
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
        std::vector<metrics::LabeledValue> out{{{"weights"}, static_cast<double>(usage.weight_bytes)},
                                               {{"kv_cache"}, static_cast<double>(usage.kv_cache_bytes)}};
        // Only the GPU engine has a workspace region.
        if (models->on_gpu()) out.push_back({{"workspace"}, static_cast<double>(usage.workspace_bytes)});
        out.push_back({{"free"}, static_cast<double>(usage.free_bytes())});
        return out;
      });
  // Scheduler state is read at scrape time: the scheduler keeps it in atomics, and a model's series
  // disappear with the model.
  (void)registry->AddLabeledGaugeCallback(
      "bitloom_inferd_requests_running", "Requests holding a KV slot (prefilling or decoding).", {"model"},
      [models] {
        std::vector<metrics::LabeledValue> out;
        for (const auto& model : models->All()) {
          out.push_back({{model->info.model_id()}, static_cast<double>(model->scheduler->running())});
        }
        return out;
      });
  (void)registry->AddLabeledGaugeCallback(
      "bitloom_inferd_requests_waiting", "Requests queued for a KV slot.", {"model"}, [models] {
        std::vector<metrics::LabeledValue> out;
        for (const auto& model : models->All()) {
          out.push_back({{model->info.model_id()}, static_cast<double>(model->scheduler->waiting())});
        }
        return out;
      });
  (void)registry->AddLabeledGaugeCallback(
      "bitloom_inferd_kv_pages", "KV cache pages by state.", {"model", "state"}, [models] {
        std::vector<metrics::LabeledValue> out;
        for (const auto& model : models->All()) {
          const int64_t used = model->scheduler->used_pages();
          const int64_t total = model->scheduler->total_pages();
          out.push_back({{model->info.model_id(), "used"}, static_cast<double>(used)});
          out.push_back({{model->info.model_id(), "free"}, static_cast<double>(total - used)});
        }
        return out;
      });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                          const v1::LoadModelRequest* request,
                                                          v1::LoadModelResponse* response) {
  // Runs on the gRPC thread: a load is rare, and the callback executor grows its pool while one
  // thread is busy.
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

absl::Status InferenceServiceImpl::StartGeneration(const ServedModel& model, std::vector<int32_t> prompt,
                                                   const v1::SamplingParams& sampling,
                                                   std::shared_ptr<GenerateReactor> reactor) {
  const uint32_t vocab = model.info.vocab_size();
  const uint32_t context = model.info.context_length();
  SchedulerRequest request;
  request.kind = SchedulerRequest::Kind::kGenerate;
  request.params = engine::GenerationParams::FromProto(sampling);
  if (absl::Status valid = request.params.Validate(vocab); !valid.ok()) {
    return absl::Status(valid.code(), absl::StrCat("sampling.", valid.message()));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: empty (no tokens)");
  const size_t prompt_tokens = prompt.size();
  if (prompt_tokens >= context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", prompt_tokens,
                                                   " tokens leave no room for a new token in context_length ",
                                                   context));
  }
  const uint32_t room = context - static_cast<uint32_t>(prompt_tokens);
  if (request.params.max_new_tokens > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.max_new_tokens: ", request.params.max_new_tokens, " plus the prompt's ", prompt_tokens,
        " tokens exceed context_length ", context, " (at most ", room, " new tokens fit)"));
  }
  request.max_new_tokens = request.params.max_new_tokens == 0 ? room : request.params.max_new_tokens;
  request.stop_ids.assign(request.params.stop_token_ids.begin(), request.params.stop_token_ids.end());
  if (!request.params.ignore_eos) {
    request.stop_ids.insert(request.stop_ids.end(), model.eos_ids.begin(), model.eos_ids.end());
  }
  request.ids = std::move(prompt);
  request.observer = std::move(reactor);
  return model.scheduler->Submit(std::move(request));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceServiceImpl::Generate(
    grpc::CallbackServerContext* /*context*/, const v1::GenerateRequest* request) {
  absl::StatusOr<std::shared_ptr<const ServedModel>> model = models_->Find(request->model_id());
  if (!model.ok()) return Rejected(model.status());
  const ServedModel& served = **model;
  std::vector<int32_t> prompt;
  switch (request->prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request->text().size() > kMaxPromptTextBytes) {
        return Rejected(absl::InvalidArgumentError(absl::StrCat(
            "text: ", request->text().size(), " bytes exceed the limit of ", kMaxPromptTextBytes)));
      }
      // Special tokens written in the prompt are parsed, as Hugging Face and llama.cpp servers do, so
      // a client can spell a chat format by hand.
      absl::StatusOr<std::vector<int32_t>> ids =
          served.tokenizer->Encode(std::string_view(request->text()), /*add_bos=*/!request->skip_bos(),
                                   /*parse_special=*/true);
      if (!ids.ok()) return Rejected(WithField("text", ids.status()));
      prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      // Pre-tokenized prompts are taken as they are: the client chose whether to include BOS.
      absl::Status checked = CheckIds("token_ids.ids", request->token_ids().ids(), served.info.vocab_size(), &prompt);
      if (!checked.ok()) return Rejected(checked);
      break;
    }
    default:
      return Rejected(absl::InvalidArgumentError("prompt: set text or token_ids"));
  }
  std::shared_ptr<GenerateReactor> reactor = GenerateReactor::Create();
  absl::Status started = StartGeneration(served, std::move(prompt), request->sampling(), reactor);
  if (!started.ok()) reactor->Reject(ToGrpcStatus(started));
  return reactor.get();
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceServiceImpl::Chat(
    grpc::CallbackServerContext* /*context*/, const v1::ChatRequest* request) {
  absl::StatusOr<std::shared_ptr<const ServedModel>> model = models_->Find(request->model_id());
  if (!model.ok()) return Rejected(model.status());
  const ServedModel& served = **model;
  if (!served.chat_template.has_value()) {
    return Rejected(absl::FailedPreconditionError(
        absl::StrCat("model_id: '", request->model_id(), "' cannot chat: ", served.chat_template_error)));
  }
  if (request->messages_size() < 1 || request->messages_size() > kMaxChatMessages) {
    return Rejected(absl::InvalidArgumentError(absl::StrCat("messages: ", request->messages_size(),
                                                            " messages, outside [1, ", kMaxChatMessages, "]")));
  }
  std::vector<formats::ChatMessage> messages;
  size_t total_bytes = 0;
  for (int i = 0; i < request->messages_size(); ++i) {
    const v1::ChatMessage& m = request->messages(i);
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return Rejected(absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role: '", m.role(), "' is not one of system, user, assistant")));
    }
    total_bytes += m.content().size();
    messages.push_back({m.role(), m.content()});
  }
  if (total_bytes > kMaxPromptTextBytes) {
    return Rejected(absl::InvalidArgumentError(absl::StrCat("messages: ", total_bytes,
                                                            " bytes of content exceed the limit of ",
                                                            kMaxPromptTextBytes)));
  }
  formats::ChatTemplateOptions options = formats::ChatTemplateOptionsFor(*served.tokenizer);
  options.add_generation_prompt = true;
  absl::StatusOr<std::string> rendered = served.chat_template->Apply(messages, options);
  if (!rendered.ok()) {
    // A template raises on conversations it does not accept (roles out of order, a system message
    // where none is allowed): the client's messages are at fault.
    return Rejected(absl::InvalidArgumentError(
        absl::StrCat("messages: the model's chat template rejected them: ", rendered.status().message())));
  }
  // The template writes BOS and the turn markers itself, so nothing is added, and they are parsed as
  // the special tokens they are (apply_chat_template(tokenize=True) does the same).
  absl::StatusOr<std::vector<int32_t>> ids =
      served.tokenizer->Encode(*rendered, /*add_bos=*/false, /*parse_special=*/true);
  if (!ids.ok()) return Rejected(WithField("messages", ids.status()));
  std::shared_ptr<GenerateReactor> reactor = GenerateReactor::Create();
  absl::Status started = StartGeneration(served, *std::move(ids), request->sampling(), reactor);
  if (!started.ok()) reactor->Reject(ToGrpcStatus(started));
  return reactor.get();
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                         const v1::TokenizeRequest* request,
                                                         v1::TokenizeResponse* response) {
  absl::StatusOr<std::shared_ptr<const ServedModel>> model = models_->Find(request->model_id());
  if (!model.ok()) return FinishUnary(context, ToGrpcStatus(model.status()));
  if (request->text().size() > kMaxTokenizeTextBytes) {
    return FinishUnary(context, ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                                    "text: ", request->text().size(), " bytes exceed the limit of ",
                                    kMaxTokenizeTextBytes))));
  }
  absl::StatusOr<std::vector<int32_t>> ids = (*model)->tokenizer->Encode(
      std::string_view(request->text()), request->add_bos(), request->parse_special());
  if (!ids.ok()) return FinishUnary(context, ToGrpcStatus(WithField("text", ids.status())));
  response->mutable_ids()->Reserve(static_cast<int>(ids->size()));
  for (const int32_t id : *ids) response->add_ids(static_cast<uint32_t>(id));
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Detokenize(grpc::CallbackServerContext* context,
                                                           const v1::DetokenizeRequest* request,
                                                           v1::DetokenizeResponse* response) {
  absl::StatusOr<std::shared_ptr<const ServedModel>> model = models_->Find(request->model_id());
  if (!model.ok()) return FinishUnary(context, ToGrpcStatus(model.status()));
  std::vector<int32_t> ids;
  absl::Status checked = CheckIds("ids", request->ids(), (*model)->info.vocab_size(), &ids);
  if (!checked.ok()) return FinishUnary(context, ToGrpcStatus(checked));
  absl::StatusOr<std::string> text = (*model)->tokenizer->Decode(ids, request->skip_special());
  if (!text.ok()) return FinishUnary(context, ToGrpcStatus(WithField("ids", text.status())));
  response->set_text(*std::move(text));
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ScoreTokens(grpc::CallbackServerContext* context,
                                                            const v1::ScoreTokensRequest* request,
                                                            v1::ScoreTokensResponse* response) {
  absl::StatusOr<std::shared_ptr<const ServedModel>> model = models_->Find(request->model_id());
  if (!model.ok()) return FinishUnary(context, ToGrpcStatus(model.status()));
  const ServedModel& served = **model;
  const uint32_t context_length = served.info.context_length();
  if (request->ids_size() < 2 || static_cast<uint32_t>(request->ids_size()) > context_length) {
    return FinishUnary(context, ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                                    "ids: ", request->ids_size(), " tokens, outside [2, context_length ",
                                    context_length, "]"))));
  }
  SchedulerRequest scoring;
  scoring.kind = SchedulerRequest::Kind::kScore;
  absl::Status checked = CheckIds("ids", request->ids(), served.info.vocab_size(), &scoring.ids);
  if (!checked.ok()) return FinishUnary(context, ToGrpcStatus(checked));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scoring.observer = std::make_shared<ScoreObserver>(context, response);
  absl::Status submitted = served.scheduler->Submit(std::move(scoring));
  if (!submitted.ok()) reactor->Finish(ToGrpcStatus(submitted));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetServerInfo(
    grpc::CallbackServerContext* context, const v1::GetServerInfoRequest* /*request*/,
    v1::ServerInfo* response) {
  response->set_version(service::kVersion);
  *response->add_devices() = device_;
  const PoolUsage usage = models_->Usage();
  response->set_pool_bytes(usage.capacity_bytes);
  response->set_pool_used_bytes(usage.capacity_bytes - usage.free_bytes());
  for (v1::ModelInfo& info : models_->List()) *response->add_models() = std::move(info);
  response->set_generation_available(true);
  return FinishUnary(context, grpc::Status::OK);
}

}  // namespace bitloom::inferd
