// inferd serving end to end: a real SmolLM2-135M-Instruct artifact (imported from the fixture GGUF as
// fp16) served by the real daemon over loopback gRPC, checked against the CPU engine run in-process
// on the same artifact. Skips, with the reason, when the fixture model is not in the cache.
//
// Token counts are kept to tens: the CPU engine decodes SmolLM2 at roughly 10 tokens/s on CI.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bitloom/engine/artifact_weight_source.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/generate.h"
#include "bitloom/engine/scoring.h"
#include "bitloom/formats/chat_template.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "daemon_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "import_checkpoint.h"

namespace bitloom {
namespace {

namespace fs = std::filesystem;
using ::bitloom::testing::DaemonProcess;
using ::bitloom::testing::HttpGet;
using ::testing::HasSubstr;

constexpr char kModelFile[] = "SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kModelId[] = "smollm2";
constexpr uint32_t kContext = 512;
constexpr uint32_t kBatch = 8;

fs::path ModelCacheDir() {
  if (const char* env = std::getenv("BITLOOM_MODEL_CACHE")) return env;
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache/bitloom/models";
}

std::string Binary(const char* relative) { return absl::StrCat(BITLOOM_BINARY_DIR, "/", relative); }

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 120) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

// Everything one Generate or Chat stream returned.
struct Stream {
  std::vector<int32_t> ids;
  std::string text;
  v1::GenerateResponse last;
  int messages = 0;
  grpc::Status status;
};

template <typename Reader>
Stream Drain(Reader& reader) {
  Stream out;
  v1::GenerateResponse message;
  while (reader.Read(&message)) {
    ++out.messages;
    out.text += message.text_delta();
    for (const v1::GeneratedToken& token : message.tokens()) out.ids.push_back(static_cast<int32_t>(token.token_id()));
    out.last = message;
  }
  out.status = reader.Finish();
  return out;
}

v1::SamplingParams Greedy(uint32_t max_new_tokens) {
  v1::SamplingParams sampling;
  sampling.set_max_new_tokens(max_new_tokens);
  return sampling;
}

// A gauge or counter sample from a /metrics body, e.g. Sample(body, "x{model=\"m\"}"); -1 if absent.
double Sample(const std::string& body, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return -1;
}

class InferdServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path gguf = ModelCacheDir() / kModelFile;
    if (!fs::exists(gguf)) {
      skip_reason_ = new std::string(absl::StrCat(gguf.string(), " is absent (set BITLOOM_MODEL_CACHE)"));
      return;
    }
    store_dir_ = new std::string(testing::MakeTempDir("serving-store"));
    auto store = modelstore::ModelStore::Open(*store_dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto imported = tools::ImportCheckpoint(gguf.string(), **store, {.artifact_name = "smollm2-f16"});
    ASSERT_TRUE(imported.ok()) << imported.status();

    // The in-process reference: the same artifact through the same engine.
    auto reader = (*store)->OpenReader("smollm2-f16", {});
    ASSERT_TRUE(reader.ok()) << reader.status();
    manifest_ = new v1::ArtifactManifest((*reader)->manifest());
    pool_ = new ThreadPool(1);
    auto model = engine::DecoderModel::Load(manifest_->config(), engine::ArtifactWeightSource(**reader), pool_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    auto tokenizer = formats::Tokenizer::FromSpec(manifest_->tokenizer());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    eos_ids_ = new std::vector<int32_t>();
    for (uint32_t id : manifest_->config().eos_token_ids()) eos_ids_->push_back(static_cast<int32_t>(id));
    for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
      if (tokenizer_->IsEndOfGeneration(id) &&
          std::find(eos_ids_->begin(), eos_ids_->end(), id) == eos_ids_->end()) {
        eos_ids_->push_back(id);
      }
    }

    daemon_ = new DaemonProcess(Binary("services/inferd/inferd"),
                                {"--store_path=" + *store_dir_, "--vram_budget=3GiB", "--shutdown_grace=4s",
                                 "--threads=2", "--device=cpu"});
    ASSERT_TRUE(daemon_->Start().ok()) << daemon_->Log();
    stub_ = v1::InferenceService::NewStub(
                grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials()))
                .release();
    v1::LoadModelRequest load;
    load.set_artifact_name("smollm2-f16");
    load.set_model_id(kModelId);
    load.set_context_length(kContext);
    load.set_max_batch_size(kBatch);
    v1::LoadModelResponse loaded;
    grpc::Status status = stub_->LoadModel(Ctx().get(), load, &loaded);
    ASSERT_TRUE(status.ok()) << status.error_message() << daemon_->Log();
    ASSERT_EQ(loaded.model().max_batch_size(), kBatch);
  }

  static void TearDownTestSuite() {
    if (daemon_ != nullptr) {
      daemon_->Terminate();
      delete daemon_;
      daemon_ = nullptr;
    }
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_NE(stub_, nullptr) << "suite setup failed";
  }

  // Greedy (or any) generation with the in-process engine, stopping as the service does.
  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, const v1::SamplingParams& sampling) {
    engine::GenerateOptions options;
    options.eos_token_ids = *eos_ids_;
    options.context_length = kContext;
    auto result = engine::Generate(*model_, prompt, engine::GenerationParams::FromProto(sampling), options);
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<int32_t> ids;
    if (result.ok()) {
      for (const engine::GeneratedToken& token : result->tokens) ids.push_back(token.id);
    }
    return ids;
  }

  static std::vector<int32_t> Encode(const std::string& text, bool add_bos = true) {
    auto ids = tokenizer_->Encode(text, add_bos, /*parse_special=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  static Stream Generate(const std::string& text, const v1::SamplingParams& sampling,
                         const std::string& model_id = kModelId) {
    v1::GenerateRequest request;
    request.set_model_id(model_id);
    request.set_text(text);
    *request.mutable_sampling() = sampling;
    auto context = Ctx();
    auto reader = stub_->Generate(context.get(), request);
    return Drain(*reader);
  }

  static std::string Metrics() {
    auto body = HttpGet(daemon_->metrics_port(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? *body : "";
  }

  static inline std::string* skip_reason_ = nullptr;
  static inline std::string* store_dir_ = nullptr;
  static inline v1::ArtifactManifest* manifest_ = nullptr;
  static inline ThreadPool* pool_ = nullptr;
  static inline engine::DecoderModel* model_ = nullptr;
  static inline formats::Tokenizer* tokenizer_ = nullptr;
  static inline std::vector<int32_t>* eos_ids_ = nullptr;
  static inline DaemonProcess* daemon_ = nullptr;
  static inline v1::InferenceService::Stub* stub_ = nullptr;
};

TEST_F(InferdServingTest, GreedyGenerateMatchesTheEngineAndStreamsItsText) {
  const std::string prompt = "The capital of France is";
  const Stream stream = Generate(prompt, Greedy(16));
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  EXPECT_EQ(stream.ids, Reference(Encode(prompt), Greedy(16)));
  EXPECT_GT(stream.messages, 1);

  v1::DetokenizeRequest detokenize;
  detokenize.set_model_id(kModelId);
  for (int32_t id : stream.ids) detokenize.add_ids(static_cast<uint32_t>(id));
  detokenize.set_skip_special(true);
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub_->Detokenize(Ctx().get(), detokenize, &text).ok());
  EXPECT_EQ(stream.text, text.text());
  EXPECT_FALSE(stream.text.empty());

  const v1::GenerateResponse& last = stream.last;
  EXPECT_TRUE(last.finish_reason() == v1::FINISH_REASON_LENGTH || last.finish_reason() == v1::FINISH_REASON_STOP);
  EXPECT_EQ(last.usage().prompt_tokens(), Encode(prompt).size());
  EXPECT_EQ(last.usage().completion_tokens(), stream.ids.size());
  EXPECT_GT(last.usage().time_to_first_token_seconds(), 0);
  EXPECT_GT(last.usage().seconds_per_output_token(), 0);
  if (last.usage().seconds_per_output_token() > 0) {
    std::printf("[ measured ] %.2f tokens/s through gRPC (batch 1), TTFT %.3f s\n",
                1.0 / last.usage().seconds_per_output_token(), last.usage().time_to_first_token_seconds());
  }
}

TEST_F(InferdServingTest, LogprobsAndTokenIdPrompts) {
  v1::GenerateRequest request;
  request.set_model_id(kModelId);
  for (int32_t id : Encode("Once upon a time")) request.mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
  *request.mutable_sampling() = Greedy(3);
  request.mutable_sampling()->set_logprobs(true);
  request.mutable_sampling()->set_top_logprobs(3);
  auto context = Ctx();
  auto reader = stub_->Generate(context.get(), request);
  v1::GenerateResponse message;
  int tokens = 0;
  while (reader->Read(&message)) {
    for (const v1::GeneratedToken& token : message.tokens()) {
      ++tokens;
      EXPECT_LE(token.logprob(), 0);
      ASSERT_EQ(token.top_logprobs_size(), 3);
      // Greedy: the chosen token is the most likely one.
      EXPECT_EQ(token.top_logprobs(0).token_id(), token.token_id());
      EXPECT_FLOAT_EQ(token.top_logprobs(0).logprob(), token.logprob());
      EXPECT_GE(token.top_logprobs(0).logprob(), token.top_logprobs(1).logprob());
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 3);
}

TEST_F(InferdServingTest, ConcurrentClientsGetTheTokensTheyGetAlone) {
  const std::vector<std::string> prompts = {
      "The capital of France is", "def fibonacci(n):", "Water boils at", "My favourite colour is",
      "1, 2, 3, 4,",             "The quick brown fox", "In 1492, Columbus", "Photosynthesis is"};
  ASSERT_EQ(prompts.size(), kBatch);
  constexpr uint32_t kTokens = 10;
  std::vector<std::vector<int32_t>> alone;
  for (const std::string& prompt : prompts) alone.push_back(Reference(Encode(prompt), Greedy(kTokens)));

  std::vector<Stream> streams(prompts.size());
  const absl::Time start = absl::Now();
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] { streams[i] = Generate(prompts[i], Greedy(kTokens)); });
  }
  for (std::thread& client : clients) client.join();
  std::printf("[ measured ] %.2f tokens/s through gRPC over %zu concurrent streams\n",
              static_cast<double>(kTokens * prompts.size()) / absl::ToDoubleSeconds(absl::Now() - start),
              prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(streams[i].status.ok()) << prompts[i] << ": " << streams[i].status.error_message();
    EXPECT_EQ(streams[i].ids, alone[i]) << prompts[i];
  }
  const std::string metrics = Metrics();
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_requests_running{model=\"smollm2\"}"), 0);
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_kv_pages{model=\"smollm2\",state=\"used\"}"), 0);
  // The clients overlapped, so some steps advanced more than one sequence.
  EXPECT_LT(Sample(metrics, "bitloom_inferd_batch_size_bucket{le=\"1\"}"),
            Sample(metrics, "bitloom_inferd_batch_size_count"));
}

TEST_F(InferdServingTest, StopStringsAreCutExactly) {
  const std::string prompt = "List the days of the week: Monday,";
  const Stream full = Generate(prompt, Greedy(16));
  ASSERT_TRUE(full.status.ok());
  // A stop string from the middle of the greedy text, found at its first occurrence.
  ASSERT_GT(full.text.size(), 12u) << full.text;
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  const size_t cut = full.text.find(stop);
  v1::SamplingParams sampling = Greedy(16);
  sampling.add_stop(stop);
  const Stream stopped = Generate(prompt, sampling);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.text, full.text.substr(0, cut)) << "stop '" << stop << "' in '" << full.text << "'";
  EXPECT_EQ(stopped.last.finish_reason(), v1::FINISH_REASON_STOP_STRING);
}

TEST_F(InferdServingTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, world! Ünïcödé, 日本語 and 🙂 emoji.";
  v1::TokenizeRequest tokenize;
  tokenize.set_model_id(kModelId);
  tokenize.set_text(text);
  tokenize.set_add_bos(true);
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub_->Tokenize(Ctx().get(), tokenize, &ids).ok());
  std::vector<int32_t> got(ids.ids().begin(), ids.ids().end());
  EXPECT_EQ(got, Encode(text));
  v1::DetokenizeRequest detokenize;
  detokenize.set_model_id(kModelId);
  *detokenize.mutable_ids() = ids.ids();
  detokenize.set_skip_special(true);
  v1::DetokenizeResponse back;
  ASSERT_TRUE(stub_->Detokenize(Ctx().get(), detokenize, &back).ok());
  EXPECT_EQ(back.text(), text);
}

TEST_F(InferdServingTest, ScoreTokensMatchesTheEngine) {
  const std::vector<int32_t> ids = Encode("The cat sat on the mat because it was warm and sunny outside.");
  v1::ScoreTokensRequest request;
  request.set_model_id(kModelId);
  for (int32_t id : ids) request.add_ids(static_cast<uint32_t>(id));
  v1::ScoreTokensResponse response;
  grpc::Status status = stub_->ScoreTokens(Ctx().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto expected = engine::ScoreTokens(*model_, ids);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ(response.logprobs_size(), static_cast<int>(ids.size() - 1));
  ASSERT_EQ(response.greedy_size(), static_cast<int>(ids.size() - 1));
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    EXPECT_EQ(response.logprobs(static_cast<int>(i)), expected->logprobs[i]) << i;
    EXPECT_EQ(response.greedy(static_cast<int>(i)), expected->greedy[i]) << i;
  }
}

TEST_F(InferdServingTest, BadRequestsNameTheFieldAndLimit) {
  Stream s = Generate("hello", Greedy(4), "absent");
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.status.error_message(), HasSubstr("model_id"));

  v1::SamplingParams bad_top_p = Greedy(4);
  bad_top_p.set_top_p(1.5f);
  s = Generate("hello", bad_top_p);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("sampling.top_p"));
  EXPECT_EQ(s.messages, 0);

  v1::GenerateRequest long_prompt;
  long_prompt.set_model_id(kModelId);
  for (uint32_t i = 0; i < kContext + 88; ++i) long_prompt.mutable_token_ids()->add_ids(100);
  {
    auto context = Ctx();
    auto reader = stub_->Generate(context.get(), long_prompt);
    s = Drain(*reader);
  }
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("600 tokens"));
  EXPECT_THAT(s.status.error_message(), HasSubstr("context_length 512"));

  v1::SamplingParams too_many = Greedy(kContext);
  s = Generate("hello there", too_many);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("sampling.max_new_tokens: 512"));
  EXPECT_THAT(s.status.error_message(), HasSubstr("context_length 512"));

  v1::GenerateRequest bad_id;
  bad_id.set_model_id(kModelId);
  bad_id.mutable_token_ids()->add_ids(1);
  bad_id.mutable_token_ids()->add_ids(manifest_->config().vocab_size());
  {
    auto context = Ctx();
    auto reader = stub_->Generate(context.get(), bad_id);
    s = Drain(*reader);
  }
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("token_ids.ids[1]"));

  v1::DetokenizeRequest detokenize;
  detokenize.set_model_id(kModelId);
  detokenize.add_ids(1);
  detokenize.add_ids(1u << 30);
  v1::DetokenizeResponse text;
  grpc::Status status = stub_->Detokenize(Ctx().get(), detokenize, &text);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("ids[1]"));

  v1::ScoreTokensRequest score;
  score.set_model_id(kModelId);
  score.add_ids(1);
  v1::ScoreTokensResponse scores;
  status = stub_->ScoreTokens(Ctx().get(), score, &scores);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("outside [2, context_length 512]"));

  v1::TokenizeRequest tokenize;
  tokenize.set_model_id("absent");
  v1::TokenizeResponse ids;
  EXPECT_EQ(stub_->Tokenize(Ctx().get(), tokenize, &ids).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(InferdServingTest, ChatRendersTheTemplateAndAnswers) {
  if (manifest_->chat_template().empty()) GTEST_SKIP() << "the fixture artifact has no chat template";
  v1::ChatRequest request;
  request.set_model_id(kModelId);
  v1::ChatMessage* user = request.add_messages();
  user->set_role("user");
  user->set_content("What is the capital of France?");
  *request.mutable_sampling() = Greedy(12);
  auto context = Ctx();
  auto reader = stub_->Chat(context.get(), request);
  const Stream stream = Drain(*reader);
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  EXPECT_FALSE(stream.text.empty());

  // The same conversation rendered and generated in-process.
  auto chat_template = formats::ChatTemplate::Parse(manifest_->chat_template());
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  formats::ChatTemplateOptions options = formats::ChatTemplateOptionsFor(*tokenizer_);
  const std::vector<formats::ChatMessage> messages = {{"user", "What is the capital of France?"}};
  auto rendered = chat_template->Apply(messages, options);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_THAT(*rendered, HasSubstr("What is the capital of France?"));
  EXPECT_EQ(stream.ids, Reference(Encode(*rendered, /*add_bos=*/false), Greedy(12)));
  std::printf("[ chat ] %s\n", stream.text.c_str());

  request.mutable_messages(0)->set_role("robot");
  auto context2 = Ctx();
  auto bad = stub_->Chat(context2.get(), request);
  const Stream rejected = Drain(*bad);
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(rejected.status.error_message(), HasSubstr("messages[0].role"));
}

TEST_F(InferdServingTest, CancelFreesTheSlotAndUnloadCancelsStreams) {
  // A second copy with one KV slot: a request that follows a cancelled one can only run if the
  // cancel freed that slot.
  v1::LoadModelRequest load;
  load.set_artifact_name("smollm2-f16");
  load.set_model_id("solo");
  load.set_context_length(256);
  load.set_max_batch_size(1);
  v1::LoadModelResponse loaded;
  grpc::Status status = stub_->LoadModel(Ctx().get(), load, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(loaded.model().max_batch_size(), 1u);

  {
    v1::GenerateRequest request;
    request.set_model_id("solo");
    request.set_text("Tell me a long story about a dragon.");
    *request.mutable_sampling() = Greedy(200);
    request.mutable_sampling()->set_ignore_eos(true);
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse message;
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_TRUE(reader->Read(&message));
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // 200 tokens would take far longer than this deadline if the slot were still held.
  {
    v1::GenerateRequest request;
    request.set_model_id("solo");
    request.set_text("Hi");
    *request.mutable_sampling() = Greedy(3);
    auto context = Ctx(15);
    auto reader = stub_->Generate(context.get(), request);
    const Stream next = Drain(*reader);
    EXPECT_TRUE(next.status.ok()) << next.status.error_message();
    EXPECT_EQ(next.ids.size(), 3u);
  }
  const std::string metrics = Metrics();
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_requests_running{model=\"solo\"}"), 0);
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_requests_waiting{model=\"solo\"}"), 0);
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_kv_pages{model=\"solo\",state=\"used\"}"), 0);
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_kv_pages{model=\"solo\",state=\"free\"}"), 256 / 16);

  // Unloading ends a running stream with FINISH_REASON_CANCELLED.
  v1::GenerateRequest request;
  request.set_model_id("solo");
  request.set_text("Count to one hundred:");
  *request.mutable_sampling() = Greedy(200);
  request.mutable_sampling()->set_ignore_eos(true);
  auto context = Ctx();
  auto reader = stub_->Generate(context.get(), request);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  v1::UnloadModelRequest unload;
  unload.set_model_id("solo");
  v1::UnloadModelResponse unloaded;
  ASSERT_TRUE(stub_->UnloadModel(Ctx().get(), unload, &unloaded).ok());
  const Stream rest = Drain(*reader);
  EXPECT_TRUE(rest.status.ok()) << rest.status.error_message();
  EXPECT_EQ(rest.last.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_LT(rest.ids.size(), 200u);
}

TEST_F(InferdServingTest, ExportsServingMetrics) {
  const Stream stream = Generate("Hello", Greedy(4));
  ASSERT_TRUE(stream.status.ok());
  const std::string metrics = Metrics();
  for (const char* name :
       {"bitloom_inferd_time_to_first_token_seconds_count{model=\"smollm2\"}",
        "bitloom_inferd_inter_token_latency_seconds_count{model=\"smollm2\"}",
        "bitloom_inferd_generated_tokens_total{model=\"smollm2\"}",
        "bitloom_inferd_prompt_tokens_total{model=\"smollm2\"}", "bitloom_inferd_requests_running{model=\"smollm2\"}",
        "bitloom_inferd_requests_waiting{model=\"smollm2\"}",
        "bitloom_inferd_kv_pages{model=\"smollm2\",state=\"free\"}", "bitloom_inferd_batch_size_count",
        "bitloom_inferd_model_load_seconds_count"}) {
    EXPECT_GE(Sample(metrics, name), 0) << name;
  }
  EXPECT_GE(Sample(metrics, "bitloom_inferd_generated_tokens_total{model=\"smollm2\"}"), 4);
  EXPECT_EQ(Sample(metrics, "bitloom_inferd_kv_pages{model=\"smollm2\",state=\"free\"}"), kBatch * kContext / 16);
  v1::ServerInfo info;
  ASSERT_TRUE(stub_->GetServerInfo(Ctx().get(), {}, &info).ok());
  EXPECT_TRUE(info.generation_available());
}

// Last: SIGTERM while a stream runs. The stream ends with a clean CANCELLED message at the grace
// deadline and the daemon exits 0.
TEST_F(InferdServingTest, SigtermDrainsRunningStreams) {
  v1::GenerateRequest request;
  request.set_model_id(kModelId);
  request.set_text("Write a very long essay about the sea.");
  *request.mutable_sampling() = Greedy(400);
  request.mutable_sampling()->set_ignore_eos(true);
  auto context = Ctx();
  auto reader = stub_->Generate(context.get(), request);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const absl::Time start = absl::Now();
  int exit_code = -2;
  std::thread terminate([&] { exit_code = daemon_->Terminate(); });
  const Stream rest = Drain(*reader);
  terminate.join();
  EXPECT_TRUE(rest.status.ok()) << rest.status.error_message();
  EXPECT_EQ(rest.last.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(exit_code, 0) << daemon_->Log();
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  // New requests were refused while draining; nothing more to check once the daemon is gone.
  delete daemon_;
  daemon_ = nullptr;
}

}  // namespace
}  // namespace bitloom
