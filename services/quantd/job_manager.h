// JobManager: quantd's quantization jobs: validation, the queue, the one worker thread, on-disk
// persistence (JobStore), progress fan-out to watchers, and the job metrics.
//
// One job runs at a time (one engine per host); the others wait in creation order. Every state
// change and every stage/layer change is saved atomically under <store>/.jobs, so after a restart
// (or a SIGKILL) Create() loads the records again: a job that was RUNNING goes first and resumes
// from its last per-block checkpoint, QUEUED jobs follow in order, finished jobs stay queryable.
// Cancel stops a running job between two tensors and deletes its checkpoints and temporary files;
// Drain (SIGTERM) stops it the same way but keeps its checkpoints and its RUNNING record, so it
// resumes when quantd starts again. Thread-safe: the gRPC service calls it concurrently.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/metrics/metrics_registry.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/quantization.pb.h"
#include "block_runner_factory.h"
#include "job_store.h"
#include "quant_device.h"

namespace bitloom::quantd {

struct JobManagerOptions {
  // Jobs waiting to run beyond this get RESOURCE_EXHAUSTED.
  int max_queued_jobs = 64;
  // Free bytes to leave on the store's filesystem beyond a job's estimated need (CreateJob refuses
  // a job that would eat into them with RESOURCE_EXHAUSTED).
  uint64_t disk_reserve_bytes = 0;
  // Threads of the pipeline's pool; 0 means one per core.
  size_t threads = 0;
  // Where the Hessians and LDLQ run (quantd --device, resolved).
  QuantDevice device = QuantDevice::kCpu;
};

class JobManager {
 public:
  // Watchers see the job (a copy) after every change. `final` is true on the last call: the job
  // ended, or quantd is draining and the job will only continue after a restart. Called with the
  // manager's lock held: a watcher must be quick and must not call back into the manager.
  using Watcher = std::function<void(const v1::Job& job, bool final)>;

  // Loads the persisted jobs of `store` (under <store root>/.jobs), re-queues the unfinished ones
  // and starts the worker. `store` and `registry` must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(modelstore::ModelStore* store,
                                                           BlockRunnerFactory runners,
                                                           metrics::MetricsRegistry* registry,
                                                           JobManagerOptions options = {});
  ~JobManager();  // Drain()s

  // Validates everything (ranges, the source opens and is supported, the corpus is text, the name
  // is free or overwrite is set, the queue has room, the disk has space), then queues the job.
  absl::StatusOr<v1::Job> CreateJob(const v1::CreateJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& id) const;
  // Newest first. `page_token` is the previous response's next_page_token.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(uint32_t page_size,
                                                const std::string& page_token) const;
  // Cancels a queued job at once and a running one at its next tensor boundary; `done` gets the
  // job once it is no longer running (at once for a queued or finished job). `done` is called on
  // the calling thread or, for a running job, the worker's, with the lock held (see Watcher).
  void CancelJob(const std::string& id, std::function<void(absl::StatusOr<v1::Job>)> done);

  // A token for Watch/Unwatch; allocate it before Watch so that the watcher may know it first.
  uint64_t NewWatchToken() { return next_watch_token_.fetch_add(1); }
  // Calls `watcher` with the current state before returning, then on every change until `final`.
  // NOT_FOUND when no job has `id`.
  absl::Status Watch(uint64_t token, const std::string& id, Watcher watcher);
  // After Unwatch returns, the watcher is not running and is never called again.
  void Unwatch(uint64_t token);

  // Stops the running job at its next tensor boundary, keeping its checkpoints so that it resumes
  // after a restart, ends every watch, and joins the worker. New jobs get UNAVAILABLE. Idempotent.
  void Drain();

  // Job ids are 32 lowercase hex characters; INVALID_ARGUMENT naming `id` otherwise.
  static absl::Status ValidateJobId(const std::string& id);

 private:
  struct Entry {
    v1::Job job;
    std::atomic<bool> stop{false};
    bool cancel_requested = false;
  };
  struct WatchEntry {
    std::string id;
    Watcher watcher;
  };
  using CancelCallback = std::function<void(absl::StatusOr<v1::Job>)>;

  JobManager(modelstore::ModelStore* store, std::unique_ptr<JobStore> jobs,
             BlockRunnerFactory runners, JobManagerOptions options);
  absl::Status RegisterMetrics(metrics::MetricsRegistry* registry);
  void LoadPersistedJobs();
  absl::Status ValidateRequest(const v1::CreateJobRequest& request) const;
  void WorkerLoop();
  void RunOne(const std::string& id);
  // Saves the job's current record; serialised so that the last save holds the latest state.
  void Persist(const std::string& id);
  // Tells the job's watchers (and pending cancels) about its new state. mu_ held.
  void NotifyLocked(const Entry& entry, bool draining);
  // Marks a job finished (state, time, error), deletes its work files. mu_ held.
  void FinishLocked(Entry& entry, v1::JobState state, const std::string& error);

  modelstore::ModelStore* const store_;
  const std::unique_ptr<JobStore> jobs_store_;
  const BlockRunnerFactory runners_;
  const JobManagerOptions options_;
  ThreadPool pool_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<Entry>> jobs_;  // by id
  std::deque<std::string> queue_;                       // ids of QUEUED jobs, in run order
  std::string running_;                                 // id of the RUNNING job, or empty
  bool draining_ = false;
  std::map<uint64_t, WatchEntry> watchers_;
  std::multimap<std::string, CancelCallback> cancel_waiters_;  // by job id
  std::atomic<uint64_t> next_watch_token_{1};

  std::mutex persist_mu_;
  std::thread worker_;

  metrics::HistogramFamily* duration_ = nullptr;
  metrics::CounterFamily* calibration_tokens_ = nullptr;
};

}  // namespace bitloom::quantd
