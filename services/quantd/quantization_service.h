// QuantizationService: the gRPC transport of quantd over the model store and the job manager.
// Thin by design: requests are validated and handed to the libraries;
// their absl::Status results are mapped to gRPC codes in one place (ToGrpcStatus).
// Thread-safe: gRPC calls the methods concurrently.
#pragma once

#include <grpcpp/grpcpp.h>

#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/quantization.grpc.pb.h"
#include "job_manager.h"

namespace bitloom::quantd {

class QuantizationServiceImpl final : public v1::QuantizationService::CallbackService {
 public:
  // `store`, `jobs` and `registry` are not owned and must outlive the service.
  QuantizationServiceImpl(modelstore::ModelStore* store, JobManager* jobs,
                          metrics::MetricsRegistry* registry);

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* context,
                                      const v1::CreateJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;

  grpc::ServerUnaryReactor* ListArtifacts(grpc::CallbackServerContext* context,
                                          const v1::ListArtifactsRequest* request,
                                          v1::ListArtifactsResponse* response) override;
  grpc::ServerUnaryReactor* DescribeArtifact(grpc::CallbackServerContext* context,
                                             const v1::DescribeArtifactRequest* request,
                                             v1::DescribeArtifactResponse* response) override;
  grpc::ServerUnaryReactor* DeleteArtifact(grpc::CallbackServerContext* context,
                                           const v1::DeleteArtifactRequest* request,
                                           v1::DeleteArtifactResponse* response) override;

 private:
  void CountStoreOperation(const char* op, bool ok);

  modelstore::ModelStore* store_;
  JobManager* jobs_;
  metrics::CounterFamily* store_operations_;
};

}  // namespace bitloom::quantd
