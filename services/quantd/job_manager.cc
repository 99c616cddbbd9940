#include "job_manager.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/service/field_names.h"
#include "calibration.h"
#include "job_executor.h"
#include "job_validation.h"

namespace bitloom::quantd {
namespace {

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;
constexpr char kJobsDirName[] = ".jobs";

bool IsFinished(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

// "queued", "running", ...: the metric's label values (JobState without its prefix, lower-case).
std::string StateLabel(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  absl::string_view view(name);
  if (absl::ConsumePrefix(&view, "JOB_STATE_")) name = std::string(view);
  return absl::AsciiStrToLower(name);
}

std::string NewJobId() {
  // 128 random bits: unguessable enough that ids need no access control of their own, and unique
  // across restarts without a counter on disk.
  static std::mutex mu;
  static std::mt19937_64 rng([] {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }());
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrCat(absl::Hex(rng(), absl::kZeroPad16), absl::Hex(rng(), absl::kZeroPad16));
}

// Newest first; ties (same millisecond) broken by id so the order is total and pages are stable.
bool NewerFirst(const v1::Job& a, const v1::Job& b) {
  if (a.created_unix_ms() != b.created_unix_ms()) return a.created_unix_ms() > b.created_unix_ms();
  return a.id() > b.id();
}

std::string PageToken(const v1::Job& last) {
  return absl::StrCat(last.created_unix_ms(), ".", last.id());
}

std::string ErrorText(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

const char* SourceField(const v1::CreateJobRequest& request) {
  return request.has_gguf() ? "gguf.path" : "hugging_face.directory";
}

}  // namespace

absl::Status JobManager::ValidateJobId(const std::string& id) {
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

JobManager::JobManager(modelstore::ModelStore* store, std::unique_ptr<JobStore> jobs,
                       BlockRunnerFactory runners, JobManagerOptions options)
    : store_(store),
      jobs_store_(std::move(jobs)),
      runners_(std::move(runners)),
      options_(options),
      pool_(options.threads) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(modelstore::ModelStore* store,
                                                              BlockRunnerFactory runners,
                                                              metrics::MetricsRegistry* registry,
                                                              JobManagerOptions options) {
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> jobs,
                           JobStore::Open(absl::StrCat(store->root(), "/", kJobsDirName)));
  std::unique_ptr<JobManager> manager(
      new JobManager(store, std::move(jobs), std::move(runners), options));
  BITLOOM_RETURN_IF_ERROR(manager->RegisterMetrics(registry));
  manager->LoadPersistedJobs();
  manager->worker_ = std::thread([m = manager.get()] { m->WorkerLoop(); });
  return manager;
}

JobManager::~JobManager() { Drain(); }

absl::Status JobManager::RegisterMetrics(metrics::MetricsRegistry* registry) {
  BITLOOM_RETURN_IF_ERROR(registry->AddLabeledGaugeCallback(
      "bitloom_quantd_jobs", "Quantization jobs the job manager tracks, by state.", {"state"},
      [this] {
        std::map<v1::JobState, double> counts;
        for (v1::JobState s : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                               v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                               v1::JOB_STATE_CANCELLED}) {
          counts[s] = 0;  // every state from startup, so none is missing from a graph
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          for (const auto& [id, entry] : jobs_) counts[entry->job.state()] += 1;
        }
        std::vector<metrics::LabeledValue> values;
        for (const auto& [state, n] : counts) values.push_back({{StateLabel(state)}, n});
        return values;
      }));
  BITLOOM_RETURN_IF_ERROR(registry->AddLabeledGaugeCallback(
      "bitloom_quantd_job_progress_ratio",
      "Fraction done (0..1) of each queued or running job; finished jobs have no series.",
      {"job_id"}, [this] {
        std::vector<metrics::LabeledValue> values;
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [id, entry] : jobs_) {
          if (IsFinished(entry->job.state())) continue;
          values.push_back({{id}, entry->job.progress().fraction_done()});
        }
        return values;
      }));
  BITLOOM_ASSIGN_OR_RETURN(
      duration_,
      registry->AddHistogram("bitloom_quantd_job_duration_seconds",
                             "Running time of finished jobs (succeeded, failed or cancelled), "
                             "summed over restarts; queueing excluded.",
                             {}, {1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400,
                                  28800, 86400}));
  BITLOOM_ASSIGN_OR_RETURN(
      calibration_tokens_,
      registry->AddCounter("bitloom_quantd_calibration_tokens_total",
                           "Calibration tokens run through decoder blocks (each block of the "
                           "measurement and quantization passes counts its tokens)."));
  // Export 0 from startup rather than nothing until the first job.
  calibration_tokens_->WithLabels(std::vector<std::string>{}).Increment(0);
  (void)duration_->WithLabels(std::vector<std::string>{});
  return absl::OkStatus();
}

void JobManager::LoadPersistedJobs() {
  std::vector<v1::Job> loaded = jobs_store_->LoadAll();
  std::sort(loaded.begin(), loaded.end(), [](const v1::Job& a, const v1::Job& b) {
    return NewerFirst(b, a);  // oldest first: the queue order
  });
  std::vector<std::string> resumed, queued;
  for (v1::Job& job : loaded) {
    const std::string id = job.id();
    if (job.state() == v1::JOB_STATE_RUNNING) {
      BITLOOM_LOG(INFO) << "job " << id << " was running: resuming from its checkpoints";
      job.set_state(v1::JOB_STATE_QUEUED);
      resumed.push_back(id);
    } else if (job.state() == v1::JOB_STATE_QUEUED) {
      queued.push_back(id);
    } else if (IsFinished(job.state())) {
      // A crash between finishing and cleaning up leaves work files; they are garbage now.
      (void)jobs_store_->RemoveWorkFiles(id);
    }
    auto entry = std::make_unique<Entry>();
    entry->job = std::move(job);
    jobs_.emplace(id, std::move(entry));
  }
  // The interrupted job first (it already holds checkpoints and had its turn), then the queue.
  for (const auto& id : resumed) queue_.push_back(id);
  for (const auto& id : queued) queue_.push_back(id);
  if (!loaded.empty()) {
    BITLOOM_LOG(INFO) << "loaded " << loaded.size() << " job records, " << queue_.size()
                      << " to run";
  }
}

absl::Status JobManager::ValidateRequest(const v1::CreateJobRequest& request) const {
  BITLOOM_RETURN_IF_ERROR(ValidateCreateJobRequest(request));
  BITLOOM_RETURN_IF_ERROR(ValidateJobSources(request));
  BITLOOM_RETURN_IF_ERROR(ValidateCalibrationSupported(request.calibration()));
  auto checkpoint = formats::OpenCheckpoint(SourcePath(request));
  if (!checkpoint.ok()) {
    // The reader's own code (NOT_FOUND for a missing file, INVALID_ARGUMENT for a malformed or
    // unsupported model), with the request field in front.
    return service::ForField(SourceField(request), checkpoint.status());
  }
  BITLOOM_RETURN_IF_ERROR(service::ForField(
      SourceField(request),
      runners_.supports ? runners_.supports(**checkpoint)
                        : absl::UnimplementedError("this build has no block runner")));
  if (!request.overwrite() &&
      store_->Describe(request.artifact_name(), /*verify_checksums=*/false).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("artifact_name: '", request.artifact_name(),
                     "' already exists in the store (set overwrite to replace it)"));
  }
  const CalibrationShape shape =
      ResolveCalibrationShape(request.calibration(), (*checkpoint)->config());
  const uint64_t need = EstimateJobDiskBytes(**checkpoint, request, shape);
  struct statvfs fs {};
  if (::statvfs(store_->root().c_str(), &fs) == 0) {
    const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free_bytes < need + options_.disk_reserve_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "artifact_name: the job needs about ", need, " bytes for the artifact and its checkpoints",
          options_.disk_reserve_bytes > 0
              ? absl::StrCat(" plus the ", options_.disk_reserve_bytes, "-byte reserve")
              : std::string(),
          ", but the store's filesystem (", store_->root(), ") has ", free_bytes, " free"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobManager::CreateJob(const v1::CreateJobRequest& request) {
  BITLOOM_RETURN_IF_ERROR(ValidateRequest(request));
  v1::Job job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("quantd is shutting down");
    for (const auto& [id, entry] : jobs_) {
      if (!IsFinished(entry->job.state()) &&
          entry->job.request().artifact_name() == request.artifact_name()) {
        return absl::AlreadyExistsError(absl::StrCat("artifact_name: job ", id, " (",
                                                     StateLabel(entry->job.state()),
                                                     ") already writes '",
                                                     request.artifact_name(), "'"));
      }
    }
    if (static_cast<int>(queue_.size()) >= options_.max_queued_jobs) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the job queue is full: ", queue_.size(), " jobs wait (limit ", options_.max_queued_jobs,
          ")"));
    }
    job.set_id(NewJobId());
    *job.mutable_request() = request;
    job.set_state(v1::JOB_STATE_QUEUED);
    job.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
    job.mutable_progress()->set_remaining_seconds(-1);
    auto entry = std::make_unique<Entry>();
    entry->job = job;
    jobs_.emplace(job.id(), std::move(entry));
  }
  // Durable before it is visible to the worker: a job that was acknowledged survives a crash.
  if (absl::Status saved = jobs_store_->Save(job); !saved.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.erase(job.id());
    return absl::InternalError(absl::StrCat("cannot persist the job: ", saved.message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job.id());
  }
  cv_.notify_all();
  BITLOOM_LOG(INFO) << "job " << job.id() << " queued: " << SourcePath(request) << " -> "
                    << request.artifact_name() << " at " << request.target_bits_per_weight()
                    << " bits";
  return job;
}

absl::StatusOr<v1::Job> JobManager::GetJob(const std::string& id) const {
  BITLOOM_RETURN_IF_ERROR(ValidateJobId(id));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("id: no job '", id, "'"));
  return it->second->job;
}

absl::StatusOr<v1::ListJobsResponse> JobManager::ListJobs(uint32_t page_size,
                                                          const std::string& page_token) const {
  if (page_size == 0) page_size = kDefaultPageSize;
  if (page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: ", page_size, " is outside [1, ", kMaxPageSize, "]"));
  }
  // The token is the (created_unix_ms, id) of the last job returned: the next page starts after
  // it in the total order, even if jobs were created or finished in between.
  v1::Job after;
  if (!page_token.empty()) {
    std::vector<std::string> parts = absl::StrSplit(page_token, '.');
    int64_t ms = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &ms) || !ValidateJobId(parts[1]).ok()) {
      return absl::InvalidArgumentError("page_token: not a token this server issued");
    }
    after.set_created_unix_ms(ms);
    after.set_id(parts[1]);
  }
  std::vector<v1::Job> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.reserve(jobs_.size());
    for (const auto& [id, entry] : jobs_) {
      if (page_token.empty() || NewerFirst(after, entry->job)) all.push_back(entry->job);
    }
  }
  std::sort(all.begin(), all.end(), NewerFirst);
  v1::ListJobsResponse response;
  for (size_t i = 0; i < all.size() && i < page_size; ++i) *response.add_jobs() = all[i];
  if (all.size() > page_size) response.set_next_page_token(PageToken(all[page_size - 1]));
  return response;
}

void JobManager::CancelJob(const std::string& id, CancelCallback done) {
  if (absl::Status s = ValidateJobId(id); !s.ok()) return done(s);
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return done(absl::NotFoundError(absl::StrCat("id: no job '", id, "'")));
  Entry& entry = *it->second;
  switch (entry.job.state()) {
    case v1::JOB_STATE_QUEUED: {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
      FinishLocked(entry, v1::JOB_STATE_CANCELLED, "");
      v1::Job job = entry.job;
      lock.unlock();
      Persist(id);
      lock.lock();
      NotifyLocked(entry, false);
      lock.unlock();
      BITLOOM_LOG(INFO) << "job " << id << " cancelled while queued";
      return done(job);
    }
    case v1::JOB_STATE_RUNNING:
      // The worker finishes it and answers every waiting cancel (NotifyLocked).
      entry.cancel_requested = true;
      entry.stop.store(true);
      cancel_waiters_.emplace(id, std::move(done));
      BITLOOM_LOG(INFO) << "job " << id << " cancelling";
      return;
    default:
      return done(entry.job);  // finished: left as it is
  }
}

absl::Status JobManager::Watch(uint64_t token, const std::string& id, Watcher watcher) {
  BITLOOM_RETURN_IF_ERROR(ValidateJobId(id));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("id: no job '", id, "'"));
  const v1::Job& job = it->second->job;
  const bool final = IsFinished(job.state()) || draining_;
  watcher(job, final);
  if (!final) watchers_.emplace(token, WatchEntry{id, std::move(watcher)});
  return absl::OkStatus();
}

void JobManager::Unwatch(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(token);
}

void JobManager::NotifyLocked(const Entry& entry, bool draining) {
  const bool final = IsFinished(entry.job.state()) || draining;
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    if (it->second.id != entry.job.id()) {
      ++it;
      continue;
    }
    it->second.watcher(entry.job, final);
    it = final ? watchers_.erase(it) : std::next(it);
  }
  if (entry.job.state() != v1::JOB_STATE_RUNNING) {
    auto [first, last] = cancel_waiters_.equal_range(entry.job.id());
    for (auto it = first; it != last; ++it) it->second(entry.job);
    cancel_waiters_.erase(first, last);
  }
}

void JobManager::FinishLocked(Entry& entry, v1::JobState state, const std::string& error) {
  entry.job.set_state(state);
  entry.job.set_error(error);
  entry.job.set_finished_unix_ms(absl::ToUnixMillis(absl::Now()));
  entry.job.mutable_progress()->set_remaining_seconds(state == v1::JOB_STATE_SUCCEEDED ? 0 : -1);
  // Nothing of an unfinished run may outlive the job: checkpoints and the temp artifact go.
  if (absl::Status s = jobs_store_->RemoveWorkFiles(entry.job.id()); !s.ok()) {
    BITLOOM_LOG(WARNING) << "job " << entry.job.id() << ": " << s;
  }
  // A job cancelled before it ever ran has no running time to report.
  if (duration_ != nullptr &&
      (state != v1::JOB_STATE_CANCELLED || entry.job.progress().elapsed_seconds() > 0)) {
    duration_->WithLabels(std::vector<std::string>{})
        .Observe(entry.job.progress().elapsed_seconds());
  }
}

void JobManager::Persist(const std::string& id) {
  std::lock_guard<std::mutex> persist_lock(persist_mu_);
  v1::Job job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    job = it->second->job;
  }
  if (absl::Status s = jobs_store_->Save(job); !s.ok()) {
    BITLOOM_LOG(ERROR) << "job " << id << ": cannot persist its state: " << s;
  }
}

void JobManager::WorkerLoop() {
  while (true) {
    std::string id;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return draining_ || !queue_.empty(); });
      if (draining_) return;
      id = queue_.front();
      queue_.pop_front();
      Entry& entry = *jobs_.at(id);
      entry.job.set_state(v1::JOB_STATE_RUNNING);
      running_ = id;
      NotifyLocked(entry, false);
    }
    Persist(id);
    RunOne(id);
  }
}

void JobManager::RunOne(const std::string& id) {
  v1::Job snapshot;
  Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry = jobs_.at(id).get();  // entries are never erased while the manager lives
    snapshot = entry->job;
  }
  JobEnvironment env;
  env.store = store_;
  env.jobs = jobs_store_.get();
  env.runners = &runners_;
  env.pool = &pool_;
  env.device = options_.device;
  JobHooks hooks;
  v1::JobStage last_stage = v1::JOB_STAGE_UNSPECIFIED;
  uint32_t last_layer = 0;
  hooks.on_progress = [&](const v1::JobProgress& progress) {
    bool persist = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      *entry->job.mutable_progress() = progress;
      NotifyLocked(*entry, false);
      persist = progress.stage() != last_stage || progress.current_layer() != last_layer;
    }
    // Saved per stage and per block (the checkpoint granularity), not per tensor.
    if (persist) {
      last_stage = progress.stage();
      last_layer = progress.current_layer();
      Persist(id);
    }
  };
  hooks.on_calibration_tokens = [this](int64_t tokens) {
    calibration_tokens_->WithLabels(std::vector<std::string>{})
        .Increment(static_cast<double>(tokens));
  };
  BITLOOM_LOG(INFO) << "job " << id << " running";
  absl::StatusOr<JobOutcome> outcome = ExecuteJob(snapshot, env, &entry->stop, hooks);
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.clear();
    if (outcome.ok()) {
      entry->job.set_achieved_bits_per_weight(outcome->achieved_bits_per_weight);
      FinishLocked(*entry, v1::JOB_STATE_SUCCEEDED, "");
      BITLOOM_LOG(INFO) << "job " << id << " succeeded: " << outcome->achieved_bits_per_weight
                        << " bits per weight, " << outcome->artifact_bytes << " bytes, "
                        << outcome->resumed_blocks << " blocks resumed from checkpoints";
    } else if (entry->cancel_requested) {
      FinishLocked(*entry, v1::JOB_STATE_CANCELLED, "");
      BITLOOM_LOG(INFO) << "job " << id << " cancelled";
    } else if (draining_ && absl::IsCancelled(outcome.status())) {
      // Stays RUNNING on disk with its checkpoints: the next quantd resumes it.
      entry->job.mutable_progress()->set_remaining_seconds(-1);
      BITLOOM_LOG(INFO) << "job " << id << " paused for shutdown; it resumes after a restart";
    } else {
      FinishLocked(*entry, v1::JOB_STATE_FAILED, ErrorText(outcome.status()));
      BITLOOM_LOG(WARNING) << "job " << id << " failed: " << outcome.status();
    }
  }
  // On disk before anyone hears of it: a client that saw the job end may rely on the record.
  Persist(id);
  std::lock_guard<std::mutex> lock(mu_);
  NotifyLocked(*entry, draining_);
}

void JobManager::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!draining_) {
      draining_ = true;
      if (!running_.empty()) jobs_.at(running_)->stop.store(true);
    }
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  // Queued jobs stay queued on disk; their watchers learn that nothing more happens here.
  for (const auto& [id, entry] : jobs_) NotifyLocked(*entry, true);
}

}  // namespace bitloom::quantd
