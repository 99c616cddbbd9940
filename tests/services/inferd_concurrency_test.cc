// inferd under 64 concurrent streaming clients: a synthetic artifact served by the real daemon
// over loopback gRPC on the device BITLOOM_INFERD_TEST_DEVICE names ("cpu": every CI run, seconds;
// "gpu": the gpu-labelled build of this file, which skips without a GPU). Each client asks for a
// greedy continuation of its own prompt; run together (continuous batching: one decode batch of up
// to 64 sequences per step) each must get exactly the tokens it gets alone, with no error, and when
// all are done no KV page may be left in use. Seeded sampled requests (temperature, top-k/p, min-p,
// every penalty, logprobs) get the same tokens and logprobs from a second daemon that samples on the
// host (--gpu_sampling=false; on the CPU both sample on the host). Also: --device values and the
// start-up refusal of --device=gpu where no GPU is visible.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "daemon_process.h"
#include "gtest/gtest.h"

#ifdef BITLOOM_INFERD_TEST_GPU
#include <cuda_runtime_api.h>
#endif

namespace bitloom {
namespace {

using ::bitloom::testing::DaemonProcess;
using ::bitloom::testing::HttpGet;

// The GPU's paged attention runs head_dim 64, 128 and 256 only, so the GPU serves SmolLM2-135M's
// shapes (random weights); the CPU the 2-layer "tiny" shape, which keeps this test at seconds.
#ifdef BITLOOM_INFERD_TEST_GPU
constexpr char kDevice[] = "gpu";
constexpr char kShape[] = "smollm2-135m";
constexpr char kBudget[] = "4GiB";
#else
constexpr char kDevice[] = "cpu";
constexpr char kShape[] = "tiny";
constexpr char kBudget[] = "1GiB";
#endif
constexpr char kArtifact[] = "tiny-synth";
constexpr char kModelId[] = "tiny";
constexpr int kClients = 64;
constexpr uint32_t kNewTokens = 12;

bool GpuVisible() {
#ifdef BITLOOM_INFERD_TEST_GPU
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

std::string Binary(const char* relative) { return absl::StrCat(BITLOOM_BINARY_DIR, "/", relative); }

// A gauge sample from a /metrics body, e.g. Sample(body, "x{model=\"m\"}"); -1 if absent.
double Sample(const std::string& body, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return -1;
}

// Everything one Generate stream returned.
struct Stream {
  std::vector<uint32_t> ids;
  std::vector<float> logprobs;  // when asked for
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  grpc::Status status;
};

// Client `i`'s prompt: its own length (3..18) and ids, none of them special (ids < 8 are left out).
std::vector<uint32_t> Prompt(int i, uint32_t vocab) {
  std::vector<uint32_t> ids;
  const int length = 3 + i % 16;
  for (int t = 0; t < length; ++t) {
    ids.push_back(8 + static_cast<uint32_t>((i * 131 + t * 37 + t * t * 7) % (vocab - 8)));
  }
  return ids;
}

Stream Generate(const std::shared_ptr<grpc::Channel>& channel, const std::vector<uint32_t>& prompt,
                const v1::SamplingParams& sampling = {}) {
  auto stub = v1::InferenceService::NewStub(channel);
  v1::GenerateRequest request;
  request.set_model_id(kModelId);
  for (uint32_t id : prompt) request.mutable_token_ids()->add_ids(id);
  *request.mutable_sampling() = sampling;
  request.mutable_sampling()->set_max_new_tokens(kNewTokens);
  request.mutable_sampling()->set_ignore_eos(true);  // every client runs all its steps
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub->Generate(&context, request);
  Stream out;
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    for (const v1::GeneratedToken& token : message.tokens()) {
      out.ids.push_back(token.token_id());
      if (sampling.logprobs()) out.logprobs.push_back(token.logprob());
    }
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) out.finish = message.finish_reason();
  }
  out.status = reader->Finish();
  return out;
}

class InferdConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(kDevice) == "gpu" && !GpuVisible()) {
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)";
    }
    store_dir_ = ::bitloom::testing::MakeTempDir("inferd_concurrency");
    auto store = modelstore::ModelStore::Open(store_dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto writer = (*store)->NewWriter(kArtifact, false);
    ASSERT_TRUE(writer.ok()) << writer.status();
    auto config = engine::SyntheticModelConfig(kShape);
    ASSERT_TRUE(config.ok()) << config.status();
    engine::SyntheticArtifactOptions options;
    options.bits_per_weight = 4.0;
    ThreadPool threads(4);
    ASSERT_TRUE(engine::WriteSyntheticArtifact(*config, options, **writer, &threads).ok());

    daemon_ = StartDaemon(/*gpu_sampling=*/true);
    ASSERT_NE(daemon_, nullptr);
    channel_ = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
  }

  std::unique_ptr<DaemonProcess> StartDaemon(bool gpu_sampling) {
    auto daemon = std::make_unique<DaemonProcess>(
        Binary("services/inferd/inferd"),
        std::vector<std::string>{"--store_path=" + store_dir_, absl::StrCat("--vram_budget=", kBudget),
                                 "--shutdown_grace=2s", "--threads=2", absl::StrCat("--device=", kDevice),
                                 absl::StrCat("--gpu_sampling=", gpu_sampling ? "true" : "false")});
    const absl::Status started = daemon->Start();
    EXPECT_TRUE(started.ok()) << started << daemon->Log();
    return started.ok() ? std::move(daemon) : nullptr;
  }

  // Loads the artifact as kModelId with kClients slots; the model's vocabulary (0 on failure).
  static uint32_t Load(const std::shared_ptr<grpc::Channel>& channel, DaemonProcess& daemon) {
    auto stub = v1::InferenceService::NewStub(channel);
    v1::LoadModelRequest load;
    load.set_artifact_name(kArtifact);
    load.set_model_id(kModelId);
    load.set_context_length(256);
    load.set_max_batch_size(kClients);
    v1::LoadModelResponse loaded;
    grpc::ClientContext context;
    const grpc::Status status = stub->LoadModel(&context, load, &loaded);
    EXPECT_TRUE(status.ok()) << status.error_message() << daemon.Log();
    return status.ok() ? loaded.model().vocab_size() : 0;
  }

  void TearDown() override {
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
    }
  }

  std::string Metrics() {
    auto body = HttpGet(daemon_->metrics_port(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? *body : "";
  }

  std::string store_dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(InferdConcurrencyTest, SixtyFourStreamsGetWhatEachGetsAlone) {
  auto stub = v1::InferenceService::NewStub(channel_);
  v1::LoadModelRequest load;
  load.set_artifact_name(kArtifact);
  load.set_model_id(kModelId);
  load.set_context_length(256);
  load.set_max_batch_size(kClients);
  v1::LoadModelResponse loaded;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub->LoadModel(&context, load, &loaded);
    ASSERT_TRUE(status.ok()) << status.error_message() << daemon_->Log();
  }
  ASSERT_EQ(loaded.model().max_batch_size(), static_cast<uint32_t>(kClients));
  const uint32_t vocab = loaded.model().vocab_size();

  std::vector<std::vector<uint32_t>> prompts;
  std::vector<Stream> alone(kClients);
  for (int i = 0; i < kClients; ++i) {
    prompts.push_back(Prompt(i, vocab));
    alone[i] = Generate(channel_, prompts[i]);
    ASSERT_TRUE(alone[i].status.ok()) << i << ": " << alone[i].status.error_message();
    ASSERT_EQ(alone[i].ids.size(), kNewTokens) << i;
  }

  std::vector<Stream> together(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] { together[i] = Generate(channel_, prompts[i]); });
  }
  for (std::thread& client : clients) client.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].finish, v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(together[i].ids, alone[i].ids) << "client " << i << " got other tokens when batched";
  }

  // Every sequence released: no request holds a slot and no KV page is in use.
  const std::string body = Metrics();
  const std::string model = absl::StrCat("model=\"", kModelId, "\"");
  EXPECT_EQ(Sample(body, absl::StrCat("bitloom_inferd_requests_running{", model, "}")), 0) << body;
  EXPECT_EQ(Sample(body, absl::StrCat("bitloom_inferd_kv_pages{", model, ",state=\"used\"}")), 0) << body;
  EXPECT_GT(Sample(body, absl::StrCat("bitloom_inferd_kv_pages{", model, ",state=\"free\"}")), 0) << body;
  // The batches did form: some step advanced more than one sequence.
  EXPECT_GT(Sample(body, "bitloom_inferd_batch_size_count"), Sample(body, "bitloom_inferd_batch_size_bucket{le=\"1\"}"))
      << body;
  const double weights = Sample(body, "bitloom_inferd_pool_bytes{region=\"weights\"}");
  EXPECT_GT(weights, 0) << body;
  if (std::string(kDevice) == "gpu") {
    EXPECT_GT(Sample(body, "bitloom_inferd_pool_bytes{region=\"workspace\"}"), 0) << body;
  }

  // Unloading frees the model's regions of the pool.
  {
    v1::UnloadModelRequest unload;
    unload.set_model_id(kModelId);
    v1::UnloadModelResponse unloaded;
    grpc::ClientContext context;
    const grpc::Status status = stub->UnloadModel(&context, unload, &unloaded);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  double left = -1;
  while (absl::Now() < deadline) {
    left = Sample(Metrics(), "bitloom_inferd_pool_bytes{region=\"weights\"}");
    if (left == 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(left, 0);
}

// Client i's sampling: seeded draws with every filter and penalty in turn; a few greedy with a
// penalty, a few with logprobs.
v1::SamplingParams Sampled(int i) {
  v1::SamplingParams p;
  p.set_temperature(i % 7 == 6 ? 0.0f : 0.6f + 0.1f * static_cast<float>(i % 5));
  p.set_seed(1000 + static_cast<uint64_t>(i));
  if (i % 2 == 0) p.set_top_k(40);
  if (i % 3 == 0) p.set_top_p(0.9f);
  if (i % 4 == 1) p.set_min_p(0.05f);
  if (i % 3 == 0 || i % 7 == 6) p.set_repetition_penalty(1.3f);
  if (i % 3 == 1) p.set_presence_penalty(0.6f);
  if (i % 4 == 2) p.set_frequency_penalty(i % 8 == 2 ? 0.5f : -0.4f);
  if (i % 5 == 0) {
    p.set_logprobs(true);
    p.set_top_logprobs(2);
  }
  return p;
}

// The same seeded requests through a daemon that samples decode steps on the GPU and one that
// copies the logits to the host and samples there: the same tokens and logprobs. Each request runs
// alone (a batch of one in both), so both see bit-identical logits.
TEST_F(InferdConcurrencyTest, SampledStreamsMatchTheHostSampler) {
  constexpr int kRequests = 16;
  const uint32_t vocab = Load(channel_, *daemon_);
  ASSERT_GT(vocab, 0u);
  std::vector<Stream> device(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    device[i] = Generate(channel_, Prompt(i, vocab), Sampled(i));
    ASSERT_TRUE(device[i].status.ok()) << i << ": " << device[i].status.error_message() << daemon_->Log();
    ASSERT_EQ(device[i].ids.size(), kNewTokens) << i;
  }
  std::unique_ptr<DaemonProcess> host_daemon = StartDaemon(/*gpu_sampling=*/false);
  ASSERT_NE(host_daemon, nullptr);
  auto host_channel = grpc::CreateChannel(host_daemon->grpc_address(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(Load(host_channel, *host_daemon), vocab);
  for (int i = 0; i < kRequests; ++i) {
    const Stream host = Generate(host_channel, Prompt(i, vocab), Sampled(i));
    ASSERT_TRUE(host.status.ok()) << i << ": " << host.status.error_message();
    EXPECT_EQ(device[i].ids, host.ids) << "request " << i;
    EXPECT_EQ(device[i].logprobs, host.logprobs) << "request " << i;
  }
  EXPECT_EQ(host_daemon->Terminate(), 0) << host_daemon->Log();
}

// --device=gpu where no GPU is visible (CUDA_VISIBLE_DEVICES empty, or a build without CUDA) stops
// inferd at start-up with a message naming the flag; an unknown value too.
TEST(InferdDeviceFlagTest, GpuWithoutOneAndUnknownValuesRefuseToStart) {
  const std::string store = ::bitloom::testing::MakeTempDir("inferd_device_flag");
  DaemonProcess gpu(Binary("services/inferd/inferd"), {"--store_path=" + store, "--device=gpu"},
                    {{"CUDA_VISIBLE_DEVICES", ""}});
  EXPECT_FALSE(gpu.Start(absl::Seconds(10)).ok());
  EXPECT_NE(gpu.WaitForExit(absl::Seconds(10)), 0);
  EXPECT_TRUE(absl::StrContains(gpu.Log(), "--device=gpu")) << gpu.Log();

  DaemonProcess bogus(Binary("services/inferd/inferd"), {"--store_path=" + store, "--device=tpu"});
  EXPECT_FALSE(bogus.Start(absl::Seconds(10)).ok());
  EXPECT_NE(bogus.WaitForExit(absl::Seconds(10)), 0);
  EXPECT_TRUE(absl::StrContains(bogus.Log(), "--device: \"tpu\" is not one of auto, cpu, gpu")) << bogus.Log();
}

}  // namespace
}  // namespace bitloom
