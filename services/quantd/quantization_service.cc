#include "quantization_service.h"

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/service/field_names.h"
#include "bitloom/service/grpc_status.h"
#include "bitloom/service/reactors.h"
#include "job_validation.h"

namespace bitloom::quantd {
namespace {

using service::FinishUnary;
using service::ToGrpcStatus;

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

absl::StatusOr<uint32_t> PageSize(uint32_t requested) {
  if (requested == 0) return kDefaultPageSize;
  if (requested > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: ", requested, " is outside [1, ", kMaxPageSize, "]"));
  }
  return requested;
}

// Job ids are 32 lowercase hex characters; anything else cannot name a job.
absl::Status ValidateJobId(const std::string& id) {
  const bool well_formed =
      id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
      });
  if (!well_formed) {
    return absl::InvalidArgumentError(
        absl::StrCat("id: '", id.substr(0, 64), "' is not a job id (32 hex characters)"));
  }
  return absl::OkStatus();
}

absl::Status JobNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("id: no job '", id, "'"));
}

}  // namespace

QuantizationServiceImpl::QuantizationServiceImpl(modelstore::ModelStore* store,
                                                 metrics::MetricsRegistry* registry)
    : store_(store) {
  auto operations = registry->AddCounter(
      "bitloom_quantd_store_operations_total",
      "Model store operations by kind and result.", {"op", "result"});
  store_operations_ = operations.ok() ? *operations : nullptr;
  // Evaluated at scrape time, so they always reflect the directory, including other writers.
  (void)registry->AddGaugeCallback("bitloom_quantd_store_artifacts",
                                   "Artifacts in the model store.", [store] {
                                     auto list = store->List();
                                     return list.ok() ? static_cast<double>(list->size()) : 0.0;
                                   });
  (void)registry->AddGaugeCallback("bitloom_quantd_store_bytes",
                                   "Bytes of artifacts in the model store.", [store] {
                                     auto list = store->List();
                                     double bytes = 0;
                                     if (list.ok()) {
                                       for (const auto& a : *list) bytes += a.size_bytes();
                                     }
                                     return bytes;
                                   });
}

void QuantizationServiceImpl::CountStoreOperation(const char* op, bool ok) {
  if (store_operations_ != nullptr) store_operations_->WithLabels({op, ok ? "ok" : "error"}).Increment();
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::CreateJob(grpc::CallbackServerContext* context,
                                                             const v1::CreateJobRequest* request,
                                                             v1::Job* /*response*/) {
  absl::Status status = ValidateCreateJobRequest(*request);
  if (status.ok()) status = ValidateJobSources(*request);
  if (status.ok()) {
    auto existing = store_->Describe(request->artifact_name(), /*verify_checksums=*/false);
    if (existing.ok() && !request->overwrite()) {
      status = absl::AlreadyExistsError(absl::StrCat(
          "artifact_name: '", request->artifact_name(),
          "' already exists in the store (set overwrite to replace it)"));
    }
  }
  if (status.ok()) {
    status = absl::UnimplementedError(
        "CreateJob: this build of quantd has no quantization engine yet; the request is valid");
  }
  return FinishUnary(context, ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                          const v1::GetJobRequest* request,
                                                          v1::Job* /*response*/) {
  absl::Status status = ValidateJobId(request->id());
  if (status.ok()) status = JobNotFound(request->id());
  return FinishUnary(context, ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                            const v1::ListJobsRequest* request,
                                                            v1::ListJobsResponse* /*response*/) {
  absl::Status status = PageSize(request->page_size()).status();
  if (status.ok() && !request->page_token().empty()) {
    status = absl::InvalidArgumentError("page_token: not a token this server issued");
  }
  return FinishUnary(context, ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                             const v1::CancelJobRequest* request,
                                                             v1::Job* /*response*/) {
  absl::Status status = ValidateJobId(request->id());
  if (status.ok()) status = JobNotFound(request->id());
  return FinishUnary(context, ToGrpcStatus(status));
}

grpc::ServerWriteReactor<v1::JobEvent>* QuantizationServiceImpl::WatchJob(
    grpc::CallbackServerContext* /*context*/, const v1::WatchJobRequest* request) {
  absl::Status status = ValidateJobId(request->id());
  if (status.ok()) status = JobNotFound(request->id());
  return new service::RejectedWriteReactor<v1::JobEvent>(ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::ListArtifacts(
    grpc::CallbackServerContext* context, const v1::ListArtifactsRequest* request,
    v1::ListArtifactsResponse* response) {
  auto page_size = PageSize(request->page_size());
  if (!page_size.ok()) return FinishUnary(context, ToGrpcStatus(page_size.status()));
  if (!request->page_token().empty()) {
    absl::Status token = modelstore::ModelStore::ValidateArtifactName(request->page_token());
    if (!token.ok()) return FinishUnary(context, ToGrpcStatus(service::ForField("page_token", token)));
  }
  auto artifacts = store_->List();
  CountStoreOperation("list", artifacts.ok());
  if (!artifacts.ok()) return FinishUnary(context, ToGrpcStatus(artifacts.status()));
  // List() is in name order, so the token (the last name returned) resumes after itself.
  auto it = std::upper_bound(artifacts->begin(), artifacts->end(), request->page_token(),
                             [](const std::string& token, const v1::ArtifactSummary& a) {
                               return token < a.name();
                             });
  if (request->page_token().empty()) it = artifacts->begin();
  for (; it != artifacts->end() && response->artifacts_size() < static_cast<int>(*page_size); ++it) {
    *response->add_artifacts() = *it;
  }
  if (it != artifacts->end() && response->artifacts_size() > 0) {
    response->set_next_page_token(response->artifacts(response->artifacts_size() - 1).name());
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::DescribeArtifact(
    grpc::CallbackServerContext* context, const v1::DescribeArtifactRequest* request,
    v1::DescribeArtifactResponse* response) {
  absl::Status status = modelstore::ModelStore::ValidateArtifactName(request->name());
  if (status.ok()) {
    auto description = store_->Describe(request->name(), request->verify_checksums());
    CountStoreOperation("describe", description.ok());
    if (description.ok()) {
      *response->mutable_summary() = std::move(description->summary);
      *response->mutable_manifest() = std::move(description->manifest);
    }
    status = description.status();
  }
  return FinishUnary(context, ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::DeleteArtifact(
    grpc::CallbackServerContext* context, const v1::DeleteArtifactRequest* request,
    v1::DeleteArtifactResponse* /*response*/) {
  absl::Status status = modelstore::ModelStore::ValidateArtifactName(request->name());
  if (status.ok()) {
    status = store_->Delete(request->name());
    CountStoreOperation("delete", status.ok());
    if (status.ok()) BITLOOM_LOG(INFO) << "deleted artifact " << request->name();
  }
  return FinishUnary(context, ToGrpcStatus(status));
}

}  // namespace bitloom::quantd
