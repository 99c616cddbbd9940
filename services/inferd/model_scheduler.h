// ModelScheduler: one loaded model's request queue and the thread that runs it, batching continuously
// at the API level.
//
// Requests wait in a bounded FIFO (full: RESOURCE_EXHAUSTED) and are admitted, in arrival order, as
// soon as the engine has a free KV slot. The thread then loops over *steps*. A step gives every
// admitted sequence one unit of work: a sequence still prefilling its prompt runs its next chunk (at
// most `prefill_chunk_tokens`, and all prefills of one step share a budget of
// `prefill_tokens_per_step`, so a long prompt never stalls the tokens of the others for long), in
// admission order; then every decoding sequence runs one token, in one engine DecodeAndSample() per
// max_batch() sequences (the GPU runs each as one batched forward pass and samples on the device;
// the CPU engine runs the sequences one after another and samples on the host). Sequences join and
// leave between steps; a finished, cancelled or failed sequence frees its slot as soon as its
// prefill chunk or decode batch is done.
//
// The engine (SequenceEngine: CpuSequenceEngine or GpuSequenceEngine) holds the KV memory, reserved
// when the model is loaded, never per request: `slots` sequences of `context_length` tokens each,
// accounted in pages of `page_tokens` tokens (a sequence uses ceil(length / page_tokens) pages).
//
// Shutdown (unload) ends every request, waiting or running, with FINISH_REASON_CANCELLED and joins the
// thread. Drain (SIGTERM) refuses new requests with UNAVAILABLE, lets admitted and queued ones run,
// and cancels whatever is left at the deadline. Thread-safe; the engine and tokenizer are not owned
// and must outlive the scheduler (only the scheduler's thread calls the engine).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bitloom/engine/generation_params.h"
#include "bitloom/formats/tokenizer.h"
#include "request_observer.h"
#include "sequence_engine.h"
#include "serving_metrics.h"

namespace bitloom::inferd {

// Tokens of a ScoreTokens request per forward pass, whatever the engine: engine::ScoreTokens' own
// chunk, so scores through the service are bit-identical to the library's.
inline constexpr int kScoreChunkTokens = 64;

struct SchedulerOptions {
  // KV slots, i.e. the most sequences admitted at once (at most the engine's slots()).
  int slots = 1;
  // Tokens per slot: prompt plus generated tokens of one sequence.
  int context_length = 0;
  // Requests that may wait for a slot; more are RESOURCE_EXHAUSTED.
  int queue_capacity = 64;
  // Most prompt tokens of one generation in one forward pass (the engine's prompt_chunk_tokens()).
  int prefill_chunk_tokens = 64;
  // Most prompt tokens prefilled in one step, over all sequences (at least one chunk).
  int prefill_tokens_per_step = 128;
  // Page size for accounting (LoadModelRequest.kv_cache.page_tokens).
  int page_tokens = 16;
};

// A validated request; the service has checked every field against the model and the context.
struct SchedulerRequest {
  enum class Kind { kGenerate, kScore };
  Kind kind = Kind::kGenerate;
  // kGenerate: the prompt (BOS included). kScore: the ids to score.
  std::vector<int32_t> ids;
  engine::GenerationParams params;  // kGenerate; Validate() passed
  uint32_t max_new_tokens = 0;      // kGenerate; >= 1, ids.size() + max_new_tokens <= context
  std::vector<int32_t> stop_ids;    // kGenerate; EOS ids (unless ignore_eos) and stop_token_ids
  absl::Time arrival = absl::Now();
  std::shared_ptr<RequestObserver> observer;
};

class ModelScheduler {
 public:
  ModelScheduler(SequenceEngine* engine, const formats::Tokenizer* tokenizer, SchedulerOptions options,
                 ModelMetrics metrics);
  ~ModelScheduler();  // Shutdown()
  ModelScheduler(const ModelScheduler&) = delete;
  ModelScheduler& operator=(const ModelScheduler&) = delete;

  // Queues the request. RESOURCE_EXHAUSTED when the queue is full; UNAVAILABLE while draining or
  // after Shutdown(). On error the observer is not called.
  absl::Status Submit(SchedulerRequest request);

  // Stops admitting new requests; cancels the remaining ones at `deadline`. Returns at once.
  void Drain(absl::Time deadline);
  // Ends every request with FINISH_REASON_CANCELLED (scores: CANCELLED) and joins the thread.
  void Shutdown();

  const SchedulerOptions& options() const { return options_; }
  int running() const { return running_count_.load(std::memory_order_relaxed); }
  int waiting() const { return waiting_count_.load(std::memory_order_relaxed); }
  int64_t used_pages() const { return used_pages_.load(std::memory_order_relaxed); }
  int64_t total_pages() const { return total_pages_; }

 private:
  struct Sequence;
  // What one step did for a sequence.
  enum class Outcome { kIdle, kWorked, kFinished };

  void Loop();
  // A prefill chunk of `seq` (within `prefill_budget`, which it consumes); a generation's last chunk
  // also emits its first token. kIdle when the budget left nothing for it; kFinished frees its slot.
  Outcome Advance(Sequence& seq, int& prefill_budget);
  Outcome AdvancePrefill(Sequence& seq, int& prefill_budget);
  Outcome AdvanceScore(Sequence& seq, int& prefill_budget);
  // Runs one token of every sequence of `batch` (all decoding, at most max_batch()) through the
  // engine's DecodeAndSample() (on the GPU only token ids come back, plus the logits of requests
  // that asked for logprobs) and emits them; marks the finished ones done.
  void DecodeBatch(absl::Span<Sequence* const> batch);
  // Releases the done sequences of `running`, updates the gauges and runs the deferred callbacks.
  void ReleaseDone(std::vector<std::unique_ptr<Sequence>>& running);
  // Streams `id`, the sequence's next token, with its logprobs from `logits` [vocab] when the request
  // asked for them (`logits` is empty otherwise); true when the sequence finished.
  bool EmitToken(Sequence& seq, int32_t id, absl::Span<const float> logits);
  // Sends the last message of a generation with `reason` (text held back for stop strings released
  // unless reason is a stop string).
  void FinishGeneration(Sequence& seq, v1::FinishReason reason, v1::GenerateResponse response);
  // Ends `seq` on cancellation by the server (unload, drain deadline).
  void CancelByServer(Sequence& seq);
  // A request's terminal callback waits in deferred_ until its slot is released and the gauges
  // updated, so a client that has seen the end of its request also sees the slot free.
  void Defer(const Sequence& seq, std::function<void(RequestObserver&)> call);
  void RunDeferred();
  void Release(std::unique_ptr<Sequence> seq);
  void UpdatePageGauge();

  SequenceEngine* engine_;  // scheduler thread only
  const formats::Tokenizer* tokenizer_;
  const SchedulerOptions options_;
  const ModelMetrics metrics_;
  const int64_t total_pages_;

  std::vector<std::function<void()>> deferred_;  // scheduler thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SchedulerRequest> queue_;              // guarded by mu_
  bool stopping_ = false;                           // guarded by mu_
  std::optional<absl::Time> drain_deadline_;        // guarded by mu_
  bool drain_expired_ = false;                      // guarded by mu_

  std::atomic<int> running_count_{0};
  std::atomic<int> waiting_count_{0};
  std::atomic<int64_t> used_pages_{0};
  std::thread thread_;
};

}  // namespace bitloom::inferd
