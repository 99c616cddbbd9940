#include "quantization_service.h"

#include <algorithm>
#include <string>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/service/field_names.h"
#include "bitloom/service/grpc_status.h"
#include "bitloom/service/reactors.h"

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

}  // namespace

QuantizationServiceImpl::QuantizationServiceImpl(modelstore::ModelStore* store, JobManager* jobs,
                                                 metrics::MetricsRegistry* registry)
    : store_(store), jobs_(jobs) {
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
                                                             v1::Job* response) {
  auto job = jobs_->CreateJob(*request);
  if (job.ok()) *response = *std::move(job);
  return FinishUnary(context, ToGrpcStatus(job.status()));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                          const v1::GetJobRequest* request,
                                                          v1::Job* response) {
  auto job = jobs_->GetJob(request->id());
  if (job.ok()) *response = *std::move(job);
  return FinishUnary(context, ToGrpcStatus(job.status()));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                            const v1::ListJobsRequest* request,
                                                            v1::ListJobsResponse* response) {
  auto page = jobs_->ListJobs(request->page_size(), request->page_token());
  if (page.ok()) *response = *std::move(page);
  return FinishUnary(context, ToGrpcStatus(page.status()));
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                             const v1::CancelJobRequest* request,
                                                             v1::Job* response) {
  // Answered once the job has actually stopped (a running job stops at its next tensor), so the
  // returned job is CANCELLED and its files are gone. The reactor outlives the call until Finish.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  jobs_->CancelJob(request->id(), [reactor, response](absl::StatusOr<v1::Job> job) {
    if (job.ok()) *response = *std::move(job);
    reactor->Finish(ToGrpcStatus(job.status()));
  });
  return reactor;
}

namespace {

// WatchJob's stream: the job's state on subscription, then every change, one write in flight at a
// time. Changes that arrive during a write are coalesced: only the newest is written next, so a
// slow client sees fewer events, never stale ones, and the server buffers at most one. The stream
// ends after the write of the final event: OK when the job ended, UNAVAILABLE when quantd is
// shutting down. Deletes itself in OnDone.
class JobWatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  JobWatchReactor(JobManager* jobs, const std::string& id)
      : jobs_(jobs), token_(jobs->NewWatchToken()) {
    absl::Status status = jobs_->Watch(
        token_, id, [this](const v1::Job& job, bool final) { OnJob(job, final); });
    if (!status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      FinishLocked(ToGrpcStatus(status));
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok || cancelled_) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    } else if (has_pending_) {
      WriteLocked();
    } else if (final_written_) {
      FinishLocked(final_status_);
    }
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    // With a write in flight, Finish waits for OnWriteDone.
    if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    jobs_->Unwatch(token_);  // after this no OnJob runs, so deleting is safe
    delete this;
  }

 private:
  // From the job manager, with its lock held.
  void OnJob(const v1::Job& job, bool final) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    *pending_.mutable_job() = job;
    has_pending_ = true;
    pending_final_ = final;
    if (final) {
      const bool ended = job.state() == v1::JOB_STATE_SUCCEEDED ||
                         job.state() == v1::JOB_STATE_FAILED ||
                         job.state() == v1::JOB_STATE_CANCELLED;
      final_status_ = ended ? grpc::Status::OK
                            : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                           "quantd is shutting down; the job continues when it "
                                           "restarts");
    }
    if (!writing_) WriteLocked();
  }

  void WriteLocked() {
    current_.Swap(&pending_);
    has_pending_ = false;
    final_written_ = pending_final_;
    writing_ = true;
    StartWrite(&current_);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  JobManager* const jobs_;
  const uint64_t token_;
  std::mutex mu_;
  v1::JobEvent current_;  // being written
  v1::JobEvent pending_;  // newest not yet written
  bool has_pending_ = false;
  bool pending_final_ = false;
  bool final_written_ = false;
  bool writing_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
  grpc::Status final_status_;
};

}  // namespace

grpc::ServerWriteReactor<v1::JobEvent>* QuantizationServiceImpl::WatchJob(
    grpc::CallbackServerContext* /*context*/, const v1::WatchJobRequest* request) {
  return new JobWatchReactor(jobs_, request->id());
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
