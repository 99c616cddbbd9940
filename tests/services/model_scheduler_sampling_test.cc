// ModelScheduler's sampled decode step (SequenceEngine::DecodeAndSample) against two engines over the
// same deterministic "model" (logits a fixed function of each sequence's tokens): one takes the
// default host path (Decode() then Sampler::Sample), the other samples the way the GPU engine does,
// on its own copy of the logits with token counts it keeps itself (the prompt = every prefilled id,
// the output = every id a decode step ran) and a uniform drawn from the sequence's Sampler. Seeded
// requests of every kind (greedy, temperature with top-k/top-p/min-p, each penalty, logprobs) must
// stream the same tokens and logprobs through both, batched together, and the device-like engine
// must have been asked for tokens, never for a step's logits.
#include <cmath>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/formats/tokenizer.h"
#include "gtest/gtest.h"
#include "model_scheduler.h"
#include "sequence_engine.h"

namespace bitloom::inferd {
namespace {

constexpr int kVocab = 512;
constexpr int kSlots = 4;

// Logits of the next token after `history`: a fixed function of its last id and length, spread over
// a few units so that top-k, top-p and min-p all cut somewhere.
std::vector<float> ModelLogits(const std::vector<int32_t>& history) {
  const double last = history.empty() ? 0.0 : history.back();
  const double len = static_cast<double>(history.size());
  std::vector<float> logits(kVocab);
  for (int v = 0; v < kVocab; ++v) {
    logits[v] = static_cast<float>(3.0 * std::sin(0.37 * v + 1.3 * last + 0.11 * len) +
                                   std::cos(0.05 * v * (1.0 + std::fmod(last, 7.0))));
  }
  return logits;
}

// kSlots sequences of the model above; Decode() returns their next logits.
class FunctionEngine : public SequenceEngine {
 public:
  int vocab_size() const override { return kVocab; }
  int slots() const override { return kSlots; }
  int max_batch() const override { return kSlots; }
  int prompt_chunk_tokens() const override { return 16; }
  absl::StatusOr<int> AddSequence() override {
    for (int s = 0; s < kSlots; ++s) {
      if (!open_[s]) {
        open_[s] = true;
        history_[s].clear();
        prompt_[s].clear();
        output_[s].clear();
        return s;
      }
    }
    return absl::ResourceExhaustedError("no slot");
  }
  void ReleaseSequence(int seq) override { open_[seq] = false; }
  int Length(int seq) const override { return static_cast<int>(history_[seq].size()); }
  absl::StatusOr<std::vector<float>> Prefill(int seq, absl::Span<const int32_t> tokens, Logits which) override {
    history_[seq].insert(history_[seq].end(), tokens.begin(), tokens.end());
    prompt_[seq].insert(prompt_[seq].end(), tokens.begin(), tokens.end());
    if (which == Logits::kNone) return std::vector<float>();
    EXPECT_EQ(which, Logits::kLast);
    return ModelLogits(history_[seq]);
  }
  absl::StatusOr<std::vector<float>> Decode(absl::Span<const int> seqs, absl::Span<const int32_t> tokens) override {
    ++decode_calls;
    std::vector<float> all;
    for (size_t i = 0; i < seqs.size(); ++i) {
      history_[seqs[i]].push_back(tokens[i]);
      output_[seqs[i]].push_back(tokens[i]);
      const std::vector<float> row = ModelLogits(history_[seqs[i]]);
      all.insert(all.end(), row.begin(), row.end());
    }
    return all;
  }
  int64_t used_pages() const override { return 0; }
  int64_t total_pages() const override { return kSlots; }

  int decode_calls = 0;  // scheduler thread only; read after it is joined

 protected:
  bool open_[kSlots] = {};
  std::vector<int32_t> history_[kSlots];
  std::vector<int32_t> prompt_[kSlots];  // what a device would have counted as the prompt
  std::vector<int32_t> output_[kSlots];  // ... and as the output
};

// Samples as GpuSequenceEngine does: the scheduler's prompt/output spans are ignored; penalties come
// from the engine's own counts, the variate from Sampler::DrawUniform(), the draw over
// Sampler::Distribution (the GPU kernel's contract, sampling.h).
class DeviceLikeEngine : public FunctionEngine {
 public:
  absl::StatusOr<SampledStep> DecodeAndSample(absl::Span<const int> seqs, absl::Span<const int32_t> tokens,
                                              absl::Span<const SamplingRow> rows) override {
    ++sampled_calls;
    SampledStep step;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int s = seqs[i];
      history_[s].push_back(tokens[i]);
      output_[s].push_back(tokens[i]);
      const std::vector<float> logits = ModelLogits(history_[s]);
      engine::Sampler& sampler = *rows[i].sampler;
      const std::vector<float> penalised = sampler.ApplyPenalties(logits, prompt_[s], output_[s]);
      int32_t token = engine::ArgMax(penalised);
      if (sampler.params().temperature != 0.0f) {
        const double u = sampler.DrawUniform();
        const std::vector<double> p = sampler.Distribution(penalised);
        double cum = 0.0;
        for (int v = 0; v < kVocab; ++v) {
          if (p[v] == 0.0) continue;
          token = v;
          cum += p[v];
          if (u < cum) break;
        }
      }
      step.tokens.push_back(token);
      step.logits.push_back(rows[i].want_logits ? logits : std::vector<float>());
    }
    return step;
  }

  int sampled_calls = 0;
};

class Collector : public RequestObserver {
 public:
  bool Cancelled() const override { return false; }
  void OnResponse(v1::GenerateResponse response, bool last) override {
    for (const v1::GeneratedToken& t : response.tokens()) {
      ids.push_back(t.token_id());
      logprobs.push_back(t.logprob());
      tops.push_back(t.top_logprobs_size());
    }
    if (last) done.Notify();
  }
  void OnScores(engine::TokenScores) override { done.Notify(); }
  void OnFailed(absl::Status status) override {
    failure = status;
    done.Notify();
  }
  absl::Notification done;
  absl::Status failure;
  std::vector<uint32_t> ids;
  std::vector<float> logprobs;
  std::vector<int> tops;
};

std::vector<engine::GenerationParams> Requests() {
  std::vector<engine::GenerationParams> all;
  engine::GenerationParams p;
  all.push_back(p);  // greedy
  p.temperature = 0.9f;
  p.seed = 11;
  all.push_back(p);
  p.top_k = 40;
  p.seed = 12;
  all.push_back(p);
  p.top_p = 0.8f;
  p.min_p = 0.05f;
  p.seed = 13;
  all.push_back(p);
  engine::GenerationParams rep;
  rep.repetition_penalty = 1.5f;
  all.push_back(rep);  // greedy with a repetition penalty
  rep.temperature = 1.2f;
  rep.seed = 14;
  all.push_back(rep);
  engine::GenerationParams additive;
  additive.temperature = 0.7f;
  additive.presence_penalty = 1.0f;
  additive.frequency_penalty = 0.5f;
  additive.top_k = 100;
  additive.seed = 15;
  additive.logprobs = true;
  additive.top_logprobs = 3;
  all.push_back(additive);
  engine::GenerationParams greedy_logprobs;
  greedy_logprobs.frequency_penalty = -0.5f;  // rewards repeats: a greedy loop unless counted right
  greedy_logprobs.logprobs = true;
  all.push_back(greedy_logprobs);
  return all;
}

struct Served {
  std::vector<std::shared_ptr<Collector>> results;
};

Served Serve(FunctionEngine& engine, const formats::Tokenizer& tokenizer) {
  SchedulerOptions options;
  options.slots = kSlots;
  options.context_length = 256;
  options.prefill_chunk_tokens = engine.prompt_chunk_tokens();
  options.prefill_tokens_per_step = 2 * options.prefill_chunk_tokens;
  ModelScheduler scheduler(&engine, &tokenizer, options, ModelMetrics{});
  Served run;
  const std::vector<engine::GenerationParams> params = Requests();
  for (size_t r = 0; r < params.size(); ++r) {
    SchedulerRequest request;
    // Prompts that repeat ids, so the prompt counts matter; lengths across chunk boundaries.
    for (size_t i = 0; i < 5 + 7 * r; ++i) request.ids.push_back(static_cast<int32_t>((i * 13 + r) % 40 + 1));
    request.params = params[r];
    request.max_new_tokens = 24;
    auto collector = std::make_shared<Collector>();
    request.observer = collector;
    run.results.push_back(collector);
    EXPECT_TRUE(scheduler.Submit(std::move(request)).ok());
  }
  for (const auto& c : run.results) {
    EXPECT_TRUE(c->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_TRUE(c->failure.ok()) << c->failure;
  }
  scheduler.Shutdown();
  return run;
}

TEST(ModelSchedulerSampling, DeviceSampledStepsGiveTheHostSamplersTokens) {
  engine::SyntheticSpecialTokens special;
  absl::StatusOr<v1::TokenizerSpec> spec = engine::SyntheticTokenizer(kVocab, &special);
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<std::unique_ptr<formats::Tokenizer>> tokenizer = formats::Tokenizer::FromSpec(*spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  FunctionEngine host;
  DeviceLikeEngine device;
  const Served a = Serve(host, **tokenizer);
  const Served b = Serve(device, **tokenizer);
  EXPECT_GT(host.decode_calls, 0);
  EXPECT_GT(device.sampled_calls, 0);
  EXPECT_EQ(device.decode_calls, 0);  // no step's logits were asked for
  ASSERT_EQ(a.results.size(), b.results.size());
  for (size_t r = 0; r < a.results.size(); ++r) {
    SCOPED_TRACE(r);
    const Collector& x = *a.results[r];
    const Collector& y = *b.results[r];
    EXPECT_EQ(x.ids.size(), 24u);
    EXPECT_EQ(x.ids, y.ids);
    EXPECT_EQ(x.logprobs, y.logprobs);
    EXPECT_EQ(x.tops, y.tops);
  }
  // The requests differ: a penalty or a seed changes the stream (the test would be vacuous if the
  // function ignored them).
  EXPECT_NE(a.results[0]->ids, a.results[4]->ids);
  EXPECT_NE(a.results[1]->ids, a.results[2]->ids);
}

}  // namespace
}  // namespace bitloom::inferd
