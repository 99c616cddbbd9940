// ModelScheduler's prompt chunking, against an engine that records every Prefill(): a generation's
// prompt reaches the engine in chunks of SchedulerOptions::prefill_chunk_tokens (inferd sets it to
// the engine's prompt_chunk_tokens(): 64 on the CPU, the model's prefill chunk on the GPU), a
// ScoreTokens request in kScoreChunkTokens whatever the generation chunk, so scores stay
// bit-identical to engine::ScoreTokens.
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/formats/tokenizer.h"
#include "gtest/gtest.h"
#include "model_scheduler.h"
#include "sequence_engine.h"

namespace bitloom::inferd {
namespace {

constexpr int kVocab = 512;

// One slot; every call's token count recorded; logits all zero.
class RecordingEngine : public SequenceEngine {
 public:
  int vocab_size() const override { return kVocab; }
  int slots() const override { return 1; }
  int max_batch() const override { return 1; }
  int prompt_chunk_tokens() const override { return 100; }
  absl::StatusOr<int> AddSequence() override {
    length_ = 0;
    return 0;
  }
  void ReleaseSequence(int) override {}
  int Length(int) const override { return length_; }
  absl::StatusOr<std::vector<float>> Prefill(int, absl::Span<const int32_t> tokens, Logits which) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      prefills_.push_back(static_cast<int>(tokens.size()));
    }
    length_ += static_cast<int>(tokens.size());
    const size_t rows = which == Logits::kAll ? tokens.size() : which == Logits::kLast ? 1 : 0;
    return std::vector<float>(rows * kVocab, 0.0f);
  }
  absl::StatusOr<std::vector<float>> Decode(absl::Span<const int> seqs, absl::Span<const int32_t>) override {
    length_ += 1;
    return std::vector<float>(seqs.size() * kVocab, 0.0f);
  }
  int64_t used_pages() const override { return 0; }
  int64_t total_pages() const override { return 1; }

  std::vector<int> TakePrefills() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(prefills_, {});
  }

 private:
  int length_ = 0;
  std::mutex mu_;
  std::vector<int> prefills_;
};

class DoneObserver : public RequestObserver {
 public:
  bool Cancelled() const override { return false; }
  void OnResponse(v1::GenerateResponse, bool last) override {
    if (last) done.Notify();
  }
  void OnScores(engine::TokenScores) override { done.Notify(); }
  void OnFailed(absl::Status status) override {
    failure = status;
    done.Notify();
  }
  absl::Notification done;
  absl::Status failure;
};

TEST(ModelSchedulerChunks, GenerationUsesTheEngineChunkAndScoresKeepTheirs) {
  engine::SyntheticSpecialTokens special;
  absl::StatusOr<v1::TokenizerSpec> spec = engine::SyntheticTokenizer(kVocab, &special);
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<std::unique_ptr<formats::Tokenizer>> tokenizer = formats::Tokenizer::FromSpec(*spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  RecordingEngine engine;
  SchedulerOptions options;
  options.slots = 1;
  options.context_length = 1024;
  options.prefill_chunk_tokens = engine.prompt_chunk_tokens();
  options.prefill_tokens_per_step = 2 * options.prefill_chunk_tokens;
  ModelScheduler scheduler(&engine, tokenizer->get(), options, ModelMetrics{});

  auto run = [&](SchedulerRequest::Kind kind) {
    SchedulerRequest request;
    request.kind = kind;
    request.ids.assign(250, 65);
    request.max_new_tokens = 1;
    auto observer = std::make_shared<DoneObserver>();
    request.observer = observer;
    EXPECT_TRUE(scheduler.Submit(std::move(request)).ok());
    EXPECT_TRUE(observer->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_TRUE(observer->failure.ok()) << observer->failure;
    return engine.TakePrefills();
  };
  EXPECT_EQ(run(SchedulerRequest::Kind::kGenerate), (std::vector<int>{100, 100, 50}));
  // 250 ids score 249 targets, 64 at a time.
  EXPECT_EQ(run(SchedulerRequest::Kind::kScore), (std::vector<int>{64, 64, 64, 57}));
  scheduler.Shutdown();
}

}  // namespace
}  // namespace bitloom::inferd
