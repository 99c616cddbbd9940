#include "model_scheduler.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/engine/generate.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/formats/unicode.h"
#include "bitloom/kernels/softmax.h"

namespace bitloom::inferd {

struct ModelScheduler::Sequence {
  Sequence(SchedulerRequest r, int engine_id, const formats::Tokenizer& tokenizer)
      : request(std::move(r)),
        id(engine_id),
        decoder(tokenizer, /*skip_special=*/true),
        matcher(request.params.stop) {
    if (request.kind == SchedulerRequest::Kind::kGenerate) sampler.emplace(request.params);
  }

  // A generation whose prompt is in the cache runs one token per step in a decode batch.
  bool decoding() const { return request.kind == SchedulerRequest::Kind::kGenerate && prefilled == request.ids.size(); }

  SchedulerRequest request;
  int id;  // the engine's sequence
  // Tokens of request.ids already in the cache (for scoring, the last id is never run).
  size_t prefilled = 0;
  // Finished, cancelled or failed this step: released at the end of its unit of work.
  bool done = false;

  // Generation.
  std::optional<engine::Sampler> sampler;
  std::vector<int32_t> output;
  formats::IncrementalDecoder decoder;
  engine::StopStringMatcher matcher;
  std::string text;  // everything decoded so far
  size_t sent = 0;   // bytes of `text` already streamed
  absl::Time first_token_time;
  absl::Time last_token_time;

  // Scoring.
  engine::TokenScores scores;
};

namespace {

bool WantsLogprobs(const engine::GenerationParams& params) { return params.logprobs || params.top_logprobs > 0; }

void FillLogprobs(absl::Span<const float> logits, const engine::GenerationParams& params,
                  const formats::Tokenizer& tokenizer, v1::GeneratedToken* token) {
  const double lse = kernels::LogSumExpF32(logits.data(), static_cast<int64_t>(logits.size()));
  token->set_logprob(static_cast<float>(logits[token->token_id()] - lse));
  const size_t n = std::min<size_t>(params.top_logprobs, logits.size());
  if (n == 0) return;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  // Ties go to the lower id, as in engine::Generate, so results are reproducible.
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&logits](int32_t a, int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  for (size_t i = 0; i < n; ++i) {
    v1::TokenLogprob* top = token->add_top_logprobs();
    top->set_token_id(static_cast<uint32_t>(order[i]));
    top->set_logprob(static_cast<float>(logits[order[i]] - lse));
    // A piece may be part of a UTF-8 character (byte-level BPE, byte fallback); the proto's string
    // must be valid UTF-8 or the message does not serialize (the stream would stall), so such bytes
    // read as U+FFFD.
    top->set_text(formats::unicode::SanitizeUtf8(tokenizer.TokenToPiece(order[i])));
  }
}

// The last message of a request that never started.
v1::GenerateResponse CancelledBeforeStart(const SchedulerRequest& request) {
  v1::GenerateResponse response;
  response.set_finish_reason(v1::FINISH_REASON_CANCELLED);
  response.mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(request.ids.size()));
  return response;
}

void CancelWaitingByServer(SchedulerRequest& request) {
  if (request.kind == SchedulerRequest::Kind::kGenerate) {
    request.observer->OnResponse(CancelledBeforeStart(request), /*last=*/true);
  } else {
    request.observer->OnFailed(absl::CancelledError("the model was unloaded or the server is shutting down"));
  }
}

}  // namespace

ModelScheduler::ModelScheduler(SequenceEngine* engine, const formats::Tokenizer* tokenizer,
                               SchedulerOptions options, ModelMetrics metrics)
    : engine_(engine),
      tokenizer_(tokenizer),
      options_(options),
      metrics_(metrics),
      total_pages_(engine->total_pages()) {
  thread_ = std::thread([this] { Loop(); });
}

ModelScheduler::~ModelScheduler() { Shutdown(); }

absl::Status ModelScheduler::Submit(SchedulerRequest request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || drain_deadline_.has_value()) {
      return absl::UnavailableError("the server is shutting down or the model is being unloaded");
    }
    if (static_cast<int>(queue_.size()) >= options_.queue_capacity) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request queue is full: ", queue_.size(), " requests wait for one of ", options_.slots,
                       " KV slots (queue capacity ", options_.queue_capacity, "); retry later"));
    }
    queue_.push_back(std::move(request));
    waiting_count_.store(static_cast<int>(queue_.size()), std::memory_order_relaxed);
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void ModelScheduler::Drain(absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!drain_deadline_.has_value()) drain_deadline_ = deadline;
  }
  cv_.notify_one();
}

void ModelScheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ModelScheduler::Loop() {
  std::vector<std::unique_ptr<Sequence>> running;  // admission order
  for (;;) {
    std::vector<SchedulerRequest> dropped;           // cancelled by their clients while waiting
    std::deque<SchedulerRequest> cancelled_waiting;  // cancelled by the server
    bool cancel_all = false;
    bool exit = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto drain_due = [&] {
        return drain_deadline_.has_value() && !drain_expired_ && absl::Now() >= *drain_deadline_;
      };
      while (!stopping_ && queue_.empty() && running.empty() && !drain_due()) {
        if (drain_deadline_.has_value() && !drain_expired_) {
          cv_.wait_until(lock, absl::ToChronoTime(*drain_deadline_));
        } else {
          cv_.wait(lock);
        }
      }
      if (stopping_ || drain_due()) {
        drain_expired_ = drain_expired_ || !stopping_;
        cancelled_waiting.swap(queue_);
        cancel_all = true;
        exit = stopping_;
      } else {
        for (auto it = queue_.begin(); it != queue_.end();) {
          if (it->observer->Cancelled()) {
            dropped.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
        // FIFO: the oldest waiting request takes the next free slot.
        while (!queue_.empty() && static_cast<int>(running.size()) < options_.slots) {
          absl::StatusOr<int> id = engine_->AddSequence();
          if (!id.ok()) break;
          running.push_back(std::make_unique<Sequence>(std::move(queue_.front()), *id, *tokenizer_));
          queue_.pop_front();
        }
      }
      waiting_count_.store(static_cast<int>(queue_.size()), std::memory_order_relaxed);
    }
    for (SchedulerRequest& request : dropped) {
      request.observer->OnFailed(absl::CancelledError("cancelled by the client"));
    }
    for (SchedulerRequest& request : cancelled_waiting) CancelWaitingByServer(request);
    if (cancel_all) {
      for (std::unique_ptr<Sequence>& seq : running) {
        CancelByServer(*seq);
        Release(std::move(seq));
      }
      running.clear();
    }
    running_count_.store(static_cast<int>(running.size()), std::memory_order_relaxed);
    UpdatePageGauge();
    RunDeferred();
    if (exit) return;
    if (running.empty()) continue;

    // One step: every admitted sequence advances by one unit. Prefill chunks run first, oldest first,
    // while the decoding sequences are collected (a prompt completed in this step decodes from the
    // next one); then the decoding sequences run max_batch() at a time.
    int prefill_budget = options_.prefill_tokens_per_step;
    int batch = 0;
    std::vector<Sequence*> decoding;
    for (std::unique_ptr<Sequence>& seq : running) {
      Outcome outcome;
      if (seq->request.observer->Cancelled()) {
        Defer(*seq, [](RequestObserver& o) { o.OnFailed(absl::CancelledError("cancelled by the client")); });
        outcome = Outcome::kFinished;
      } else if (seq->decoding()) {
        decoding.push_back(seq.get());
        continue;
      } else {
        outcome = Advance(*seq, prefill_budget);
      }
      if (outcome != Outcome::kIdle) ++batch;
      if (outcome == Outcome::kFinished) {
        seq->done = true;
        ReleaseDone(running);
      }
    }
    const size_t max_batch = static_cast<size_t>(std::max(1, engine_->max_batch()));
    for (size_t start = 0; start < decoding.size(); start += max_batch) {
      const auto group = absl::MakeConstSpan(decoding).subspan(start, max_batch);
      DecodeBatch(group);
      batch += static_cast<int>(group.size());
      ReleaseDone(running);
    }
    std::erase(running, nullptr);
    if (batch > 0 && metrics_.batch_size != nullptr) metrics_.batch_size->Observe(batch);
    UpdatePageGauge();
  }
}

// Released sequences leave a null in `running` (the step may still be iterating over it); the step
// erases them at its end.
void ModelScheduler::ReleaseDone(std::vector<std::unique_ptr<Sequence>>& running) {
  int open = 0;
  for (std::unique_ptr<Sequence>& seq : running) {
    if (seq != nullptr && seq->done) Release(std::move(seq));
    if (seq != nullptr) ++open;
  }
  running_count_.store(open, std::memory_order_relaxed);
  UpdatePageGauge();
  RunDeferred();
}

void ModelScheduler::DecodeBatch(absl::Span<Sequence* const> batch) {
  std::vector<int> ids;
  std::vector<int32_t> tokens;
  std::vector<SequenceEngine::SamplingRow> rows;
  for (Sequence* seq : batch) {
    ids.push_back(seq->id);
    // The newest token has not been run yet.
    tokens.push_back(seq->output.back());
    rows.push_back({.sampler = &*seq->sampler,
                    .prompt = seq->request.ids,
                    .output = seq->output,
                    .want_logits = WantsLogprobs(seq->request.params)});
  }
  absl::StatusOr<SequenceEngine::SampledStep> step = engine_->DecodeAndSample(ids, tokens, rows);
  if (!step.ok()) {
    BITLOOM_LOG(ERROR) << "decode step failed: " << step.status();
    for (Sequence* seq : batch) {
      Defer(*seq, [message = absl::StrCat("forward pass: ", step.status().message())](RequestObserver& o) {
        o.OnFailed(absl::InternalError(message));
      });
      seq->done = true;
    }
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i]->done = EmitToken(*batch[i], step->tokens[i], step->logits[i]);
  }
}

ModelScheduler::Outcome ModelScheduler::Advance(Sequence& seq, int& prefill_budget) {
  return seq.request.kind == SchedulerRequest::Kind::kGenerate ? AdvancePrefill(seq, prefill_budget)
                                                               : AdvanceScore(seq, prefill_budget);
}

ModelScheduler::Outcome ModelScheduler::AdvancePrefill(Sequence& seq, int& prefill_budget) {
  const std::vector<int32_t>& prompt = seq.request.ids;
  if (prefill_budget == 0) return Outcome::kIdle;
  const size_t n = std::min({prompt.size() - seq.prefilled, static_cast<size_t>(options_.prefill_chunk_tokens),
                             static_cast<size_t>(prefill_budget)});
  prefill_budget -= static_cast<int>(n);
  const bool last_chunk = seq.prefilled + n == prompt.size();
  absl::StatusOr<std::vector<float>> logits =
      engine_->Prefill(seq.id, absl::MakeConstSpan(prompt).subspan(seq.prefilled, n),
                       last_chunk ? SequenceEngine::Logits::kLast : SequenceEngine::Logits::kNone);
  if (logits.ok()) seq.prefilled += n;
  if (logits.ok() && !last_chunk) return Outcome::kWorked;
  if (logits.ok() && metrics_.prompt_tokens != nullptr) {
    metrics_.prompt_tokens->Increment(static_cast<double>(prompt.size()));
  }
  if (!logits.ok()) {
    BITLOOM_LOG(ERROR) << "forward pass failed: " << logits.status();
    Defer(seq, [message = absl::StrCat("forward pass: ", logits.status().message())](RequestObserver& o) {
      o.OnFailed(absl::InternalError(message));
    });
    return Outcome::kFinished;
  }
  // The first token is drawn on the host from the prompt's logits, whatever the engine.
  const int32_t id = seq.sampler->Sample(*logits, prompt, seq.output);
  return EmitToken(seq, id, *logits) ? Outcome::kFinished : Outcome::kWorked;
}

bool ModelScheduler::EmitToken(Sequence& seq, int32_t id, absl::Span<const float> logits) {
  const SchedulerRequest& request = seq.request;
  const absl::Time now = absl::Now();
  if (seq.output.empty()) {
    seq.first_token_time = now;
    if (metrics_.time_to_first_token != nullptr) {
      metrics_.time_to_first_token->Observe(absl::ToDoubleSeconds(now - request.arrival));
    }
  } else if (metrics_.inter_token_latency != nullptr) {
    metrics_.inter_token_latency->Observe(absl::ToDoubleSeconds(now - seq.last_token_time));
  }
  seq.last_token_time = now;
  seq.output.push_back(id);
  if (metrics_.generated_tokens != nullptr) metrics_.generated_tokens->Increment();

  v1::GenerateResponse response;
  v1::GeneratedToken* token = response.add_tokens();
  token->set_token_id(static_cast<uint32_t>(id));
  if (WantsLogprobs(request.params)) {
    FillLogprobs(logits, request.params, *tokenizer_, token);
  }
  // An id the model knows but the tokenizer does not (padded embedding rows) has no text.
  absl::StatusOr<std::string> piece = seq.decoder.Push(id);
  if (piece.ok()) seq.text += *piece;
  const size_t final_bytes = std::max(seq.sent, seq.matcher.Update(seq.text));

  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  if (seq.matcher.stopped()) {
    reason = v1::FINISH_REASON_STOP_STRING;
  } else if (std::find(request.stop_ids.begin(), request.stop_ids.end(), id) != request.stop_ids.end()) {
    reason = v1::FINISH_REASON_STOP;
  } else if (seq.output.size() >= request.max_new_tokens) {
    reason = v1::FINISH_REASON_LENGTH;
  }
  if (reason != v1::FINISH_REASON_UNSPECIFIED) {
    FinishGeneration(seq, reason, std::move(response));
    return true;
  }
  response.set_text_delta(seq.text.substr(seq.sent, final_bytes - seq.sent));
  seq.sent = final_bytes;
  request.observer->OnResponse(std::move(response), /*last=*/false);
  return false;
}

void ModelScheduler::FinishGeneration(Sequence& seq, v1::FinishReason reason, v1::GenerateResponse response) {
  size_t end = seq.text.size();
  if (reason == v1::FINISH_REASON_STOP_STRING) {
    end = seq.matcher.Update(seq.text);
  } else {
    // The stream is over: bytes held back for an incomplete character are flushed, and a held-back
    // partial stop string turned out not to be one, so it is released, unless the flush completed one.
    seq.text += seq.decoder.Flush();
    end = seq.matcher.Update(seq.text);
    if (seq.matcher.stopped()) {
      reason = v1::FINISH_REASON_STOP_STRING;
    } else {
      end = seq.text.size();
    }
  }
  end = std::max(end, seq.sent);
  response.set_text_delta(seq.text.substr(seq.sent, end - seq.sent));
  seq.sent = end;
  response.set_finish_reason(reason);
  v1::Usage* usage = response.mutable_usage();
  usage->set_prompt_tokens(static_cast<uint32_t>(seq.request.ids.size()));
  usage->set_completion_tokens(static_cast<uint32_t>(seq.output.size()));
  if (!seq.output.empty()) {
    usage->set_time_to_first_token_seconds(absl::ToDoubleSeconds(seq.first_token_time - seq.request.arrival));
  }
  if (seq.output.size() > 1) {
    usage->set_seconds_per_output_token(absl::ToDoubleSeconds(seq.last_token_time - seq.first_token_time) /
                                        static_cast<double>(seq.output.size() - 1));
  }
  Defer(seq, [last = std::move(response)](RequestObserver& o) mutable { o.OnResponse(std::move(last), true); });
}

ModelScheduler::Outcome ModelScheduler::AdvanceScore(Sequence& seq, int& prefill_budget) {
  const std::vector<int32_t>& ids = seq.request.ids;
  const size_t to_run = ids.size() - 1;  // the last id predicts nothing
  if (prefill_budget == 0) return Outcome::kIdle;
  const size_t n = std::min({to_run - seq.prefilled, static_cast<size_t>(kScoreChunkTokens),
                             static_cast<size_t>(prefill_budget)});
  prefill_budget -= static_cast<int>(n);
  absl::StatusOr<std::vector<float>> logits =
      engine_->Prefill(seq.id, absl::MakeConstSpan(ids).subspan(seq.prefilled, n), SequenceEngine::Logits::kAll);
  if (!logits.ok()) {
    BITLOOM_LOG(ERROR) << "forward pass failed: " << logits.status();
    Defer(seq, [message = absl::StrCat("forward pass: ", logits.status().message())](RequestObserver& o) {
      o.OnFailed(absl::InternalError(message));
    });
    return Outcome::kFinished;
  }
  // As engine::ScoreTokens: log-softmax in double over the fp32 logits, argmax with ties to the lower id.
  const int64_t vocab = engine_->vocab_size();
  for (size_t r = 0; r < n; ++r) {
    const size_t i = seq.prefilled + r;
    const float* row = logits->data() + static_cast<int64_t>(r) * vocab;
    const double lse = kernels::LogSumExpF32(row, vocab);
    const int32_t target = ids[i + 1];
    seq.scores.logprobs.push_back(static_cast<float>(static_cast<double>(row[target]) - lse));
    seq.scores.greedy.push_back(engine::ArgMax(absl::MakeConstSpan(row, static_cast<size_t>(vocab))) == target);
  }
  seq.prefilled += n;
  if (seq.prefilled < to_run) return Outcome::kWorked;
  if (metrics_.prompt_tokens != nullptr) metrics_.prompt_tokens->Increment(static_cast<double>(ids.size()));
  Defer(seq, [scores = std::move(seq.scores)](RequestObserver& o) mutable { o.OnScores(std::move(scores)); });
  return Outcome::kFinished;
}

void ModelScheduler::CancelByServer(Sequence& seq) {
  if (seq.request.kind == SchedulerRequest::Kind::kGenerate) {
    FinishGeneration(seq, v1::FINISH_REASON_CANCELLED, v1::GenerateResponse());
  } else {
    Defer(seq, [](RequestObserver& o) {
      o.OnFailed(absl::CancelledError("the model was unloaded or the server is shutting down"));
    });
  }
}

void ModelScheduler::Defer(const Sequence& seq, std::function<void(RequestObserver&)> call) {
  deferred_.push_back([observer = seq.request.observer, call = std::move(call)] { call(*observer); });
}

void ModelScheduler::RunDeferred() {
  std::vector<std::function<void()>> calls;
  calls.swap(deferred_);
  for (std::function<void()>& call : calls) call();
}

void ModelScheduler::Release(std::unique_ptr<Sequence> seq) { engine_->ReleaseSequence(seq->id); }

void ModelScheduler::UpdatePageGauge() {
  used_pages_.store(engine_->used_pages(), std::memory_order_relaxed);
}

}  // namespace bitloom::inferd
