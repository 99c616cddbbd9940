// Integration tests: both daemons run as real processes on loopback and are driven through real gRPC
// clients, the way a deployment uses them.
#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "bitloom/v1/quantization.grpc.pb.h"
#include "daemon_process.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

namespace bitloom {
namespace {

using ::bitloom::testing::DaemonProcess;
using ::bitloom::testing::HttpGet;
using ::testing::HasSubstr;

// Writes a tiny but complete fp16 Llama-style model (one layer, a 32-token byte-free BPE tokenizer)
// straight into the store directory, as quantd will: inferd builds and serves it for real. Returns
// the bytes inferd's CPU engine holds for its weights (every tensor as fp32).
uint64_t PublishArtifact(const std::string& store_root, const std::string& name, uint32_t hidden) {
  auto store = modelstore::ModelStore::Open(store_root);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;
  auto writer = (*store)->NewWriter(name, /*overwrite=*/false);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return 0;
  constexpr uint32_t kVocab = 32;
  const uint32_t heads = 4, kv_heads = 2, head_dim = hidden / 4, inter = 2 * hidden;
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> tensors = {
      {"embed_tokens.weight", {kVocab, hidden}},
      {"norm.weight", {hidden}},
      {"layers.0.attn_norm.weight", {hidden}},
      {"layers.0.attn.q_proj.weight", {heads * head_dim, hidden}},
      {"layers.0.attn.k_proj.weight", {kv_heads * head_dim, hidden}},
      {"layers.0.attn.v_proj.weight", {kv_heads * head_dim, hidden}},
      {"layers.0.attn.o_proj.weight", {hidden, heads * head_dim}},
      {"layers.0.mlp_norm.weight", {hidden}},
      {"layers.0.mlp.gate_proj.weight", {inter, hidden}},
      {"layers.0.mlp.up_proj.weight", {inter, hidden}},
      {"layers.0.mlp.down_proj.weight", {hidden, inter}}};
  uint64_t fp32_bytes = 0;
  for (const auto& [tensor_name, shape] : tensors) {
    uint64_t count = 1;
    for (uint64_t d : shape) count *= d;
    fp32_bytes += count * 4;
    v1::TensorEntry tensor;
    tensor.set_name(tensor_name);
    tensor.set_codec(v1::CODEC_F16);
    for (uint64_t d : shape) tensor.add_shape(d);
    tensor.set_bits_per_weight(16);
    // 0x2c00 is fp16 0.0625: small enough that activations stay tame.
    std::vector<uint8_t> bytes(count * 2);
    for (size_t i = 0; i < bytes.size(); i += 2) {
      bytes[i] = 0x00;
      bytes[i + 1] = 0x2c;
    }
    absl::Status added = (*writer)->AddTensor(tensor, bytes);
    EXPECT_TRUE(added.ok()) << added;
  }
  v1::ArtifactManifest manifest;
  v1::ModelConfig* config = manifest.mutable_config();
  config->set_architecture("llama");
  config->set_hidden_size(hidden);
  config->set_intermediate_size(inter);
  config->set_num_layers(1);
  config->set_num_attention_heads(heads);
  config->set_num_key_value_heads(kv_heads);
  config->set_head_dim(head_dim);
  config->set_vocab_size(kVocab);
  config->set_max_position_embeddings(2048);
  config->set_tie_word_embeddings(true);
  std::string vocab;
  for (uint32_t i = 0; i < kVocab; ++i) {
    absl::StrAppend(&vocab, i == 0 ? "" : ", ", "\"", std::string(1, static_cast<char>('a' + (i % 26))),
                    i < 26 ? "" : std::to_string(i), "\": ", i);
  }
  manifest.mutable_tokenizer()->set_hf_json(
      absl::StrCat(R"({"model": {"type": "BPE", "vocab": {)", vocab, R"(}, "merges": []}})"));
  manifest.set_bits_per_weight(16);
  absl::Status finished = (*writer)->Finish(manifest);
  EXPECT_TRUE(finished.ok()) << finished;
  return fp32_bytes;
}

std::string Binary(const char* relative) { return absl::StrCat(BITLOOM_BINARY_DIR, "/", relative); }

class DaemonsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::MakeTempDir("store");
    ASSERT_FALSE(store_.empty());
    quantd_ = std::make_unique<DaemonProcess>(
        Binary("services/quantd/quantd"),
        std::vector<std::string>{"--store_path=" + store_, "--shutdown_grace=5s"});
    inferd_ = std::make_unique<DaemonProcess>(
        Binary("services/inferd/inferd"),
        std::vector<std::string>{"--store_path=" + store_, "--vram_budget=256MiB",
                                 "--shutdown_grace=5s", "--device=cpu"});
    ASSERT_TRUE(quantd_->Start().ok());
    ASSERT_TRUE(inferd_->Start().ok());
    quant_ = v1::QuantizationService::NewStub(
        grpc::CreateChannel(quantd_->grpc_address(), grpc::InsecureChannelCredentials()));
    infer_ = v1::InferenceService::NewStub(
        grpc::CreateChannel(inferd_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    for (auto* daemon : {&quantd_, &inferd_}) {
      if (*daemon != nullptr) {
        EXPECT_EQ((*daemon)->Terminate(), 0) << (*daemon)->Log();
      }
    }
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return context;
  }

  std::string store_;
  std::unique_ptr<DaemonProcess> quantd_;
  std::unique_ptr<DaemonProcess> inferd_;
  std::unique_ptr<v1::QuantizationService::Stub> quant_;
  std::unique_ptr<v1::InferenceService::Stub> infer_;
};

grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& address,
                                                             const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.status();
}

TEST_F(DaemonsTest, BothAnswerHealthChecksAsServing) {
  using grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(Health(quantd_->grpc_address(), ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(quantd_->grpc_address(), "bitloom.v1.QuantizationService"),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(inferd_->grpc_address(), "bitloom.v1.InferenceService"),
            HealthCheckResponse::SERVING);
  EXPECT_TRUE(HttpGet(quantd_->metrics_port(), "/readyz").ok());
  EXPECT_TRUE(HttpGet(inferd_->metrics_port(), "/healthz").ok());
}

TEST_F(DaemonsTest, ListsDescribesAndDeletesArtifacts) {
  PublishArtifact(store_, "tiny-b", 64);
  PublishArtifact(store_, "tiny-a", 32);
  v1::ListArtifactsResponse list;
  ASSERT_TRUE(quant_->ListArtifacts(Ctx().get(), {}, &list).ok());
  ASSERT_EQ(list.artifacts_size(), 2);
  EXPECT_EQ(list.artifacts(0).name(), "tiny-a");
  EXPECT_EQ(list.artifacts(1).architecture(), "llama");

  v1::DescribeArtifactRequest describe;
  describe.set_name("tiny-b");
  describe.set_verify_checksums(true);
  v1::DescribeArtifactResponse description;
  ASSERT_TRUE(quant_->DescribeArtifact(Ctx().get(), describe, &description).ok());
  ASSERT_EQ(description.manifest().tensors_size(), 11);
  EXPECT_EQ(description.manifest().tensors(3).name(), "layers.0.attn.q_proj.weight");
  EXPECT_EQ(description.manifest().tensors(3).size(), 64u * 64 * 2);

  v1::DeleteArtifactRequest remove;
  remove.set_name("tiny-a");
  v1::DeleteArtifactResponse removed;
  ASSERT_TRUE(quant_->DeleteArtifact(Ctx().get(), remove, &removed).ok());
  grpc::Status again = quant_->DeleteArtifact(Ctx().get(), remove, &removed);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND);
  list.Clear();
  ASSERT_TRUE(quant_->ListArtifacts(Ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.artifacts_size(), 1);
}

TEST_F(DaemonsTest, ListArtifactsPages) {
  for (int i = 0; i < 5; ++i) PublishArtifact(store_, absl::StrCat("m", i), 16);
  v1::ListArtifactsRequest request;
  request.set_page_size(2);
  std::vector<std::string> names;
  for (int page = 0; page < 10; ++page) {
    v1::ListArtifactsResponse response;
    ASSERT_TRUE(quant_->ListArtifacts(Ctx().get(), request, &response).ok());
    for (const auto& a : response.artifacts()) names.push_back(a.name());
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  EXPECT_THAT(names, ::testing::ElementsAre("m0", "m1", "m2", "m3", "m4"));
  request.set_page_size(5000);
  v1::ListArtifactsResponse response;
  grpc::Status status = quant_->ListArtifacts(Ctx().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_size"));
}

TEST_F(DaemonsTest, BadRequestsGetClearErrors) {
  v1::DescribeArtifactRequest describe;
  describe.set_name("../../etc/passwd");
  v1::DescribeArtifactResponse description;
  grpc::Status status = quant_->DescribeArtifact(Ctx().get(), describe, &description);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("name"));

  v1::CreateJobRequest job;
  job.mutable_gguf()->set_path("/nonexistent/model.gguf");
  job.set_artifact_name("out");
  job.set_target_bits_per_weight(9.5);
  v1::Job created;
  status = quant_->CreateJob(Ctx().get(), job, &created);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("target_bits_per_weight: 9.5 is outside [1.5, 8]"));

  job.set_target_bits_per_weight(2.5);
  status = quant_->CreateJob(Ctx().get(), job, &created);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("gguf.path"));

  v1::GetJobRequest get;
  get.set_id(std::string(32, 'a'));
  status = quant_->GetJob(Ctx().get(), get, &created);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::LoadModelRequest load;
  load.set_artifact_name("absent");
  v1::LoadModelResponse loaded;
  status = infer_->LoadModel(Ctx().get(), load, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::GenerateRequest generate;
  generate.set_model_id("absent");
  generate.set_text("hello");
  grpc::ClientContext context;
  auto stream = infer_->Generate(&context, generate);
  v1::GenerateResponse chunk;
  EXPECT_FALSE(stream->Read(&chunk));
  status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("model_id"));
}

TEST_F(DaemonsTest, CreateJobRefusesAnUnreadableSource) {
  // CreateJob opens and parses the source before queueing (tests/services/quantd_jobs_test.cc runs
  // real jobs): a file that only has a .gguf name is refused, naming the field.
  v1::CreateJobRequest job;
  job.mutable_gguf()->set_path(absl::StrCat(store_, "/model.gguf"));
  { std::ofstream(absl::StrCat(store_, "/model.gguf")) << "x"; }
  job.set_artifact_name("out");
  job.set_target_bits_per_weight(2.5);
  v1::Job created;
  grpc::Status status = quant_->CreateJob(Ctx().get(), job, &created);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("gguf.path"));
}

TEST_F(DaemonsTest, LoadsModelsIntoThePoolAndSurvivesDelete) {
  const uint64_t weight_bytes = PublishArtifact(store_, "tiny", 64);
  v1::LoadModelRequest load;
  load.set_artifact_name("tiny");
  load.set_model_id("served");
  load.set_context_length(512);
  load.set_max_batch_size(2);
  load.set_verify_checksums(true);
  v1::LoadModelResponse loaded;
  grpc::Status status = infer_->LoadModel(Ctx().get(), load, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The CPU engine holds weights and KV cache as fp32.
  EXPECT_EQ(loaded.model().weight_bytes(), weight_bytes);
  // 2 (K,V) * 1 layer * 2 kv heads * 16 head_dim * 4 bytes per token, 512 tokens, 2 sequences.
  EXPECT_EQ(loaded.model().kv_cache_bytes(), 2u * 2 * 16 * 4 * 512 * 2);

  status = infer_->LoadModel(Ctx().get(), load, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  load.set_model_id("too-long");
  load.set_context_length(4096);
  status = infer_->LoadModel(Ctx().get(), load, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_position_embeddings 2048"));

  // Deleting the artifact does not disturb the loaded model.
  v1::DeleteArtifactRequest remove;
  remove.set_name("tiny");
  v1::DeleteArtifactResponse removed;
  ASSERT_TRUE(quant_->DeleteArtifact(Ctx().get(), remove, &removed).ok());
  v1::ServerInfo info;
  ASSERT_TRUE(infer_->GetServerInfo(Ctx().get(), {}, &info).ok());
  ASSERT_EQ(info.models_size(), 1);
  EXPECT_EQ(info.pool_bytes(), 256u << 20);
  EXPECT_EQ(info.pool_used_bytes(), loaded.model().weight_bytes() + loaded.model().kv_cache_bytes());

  auto metrics = HttpGet(inferd_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_THAT(*metrics, HasSubstr("bitloom_inferd_models_loaded 1"));
  EXPECT_THAT(*metrics, HasSubstr(absl::StrCat("bitloom_inferd_pool_bytes{region=\"weights\"} ",
                                              weight_bytes)));

  v1::UnloadModelRequest unload;
  unload.set_model_id("served");
  v1::UnloadModelResponse unloaded;
  ASSERT_TRUE(infer_->UnloadModel(Ctx().get(), unload, &unloaded).ok());
  EXPECT_EQ(infer_->UnloadModel(Ctx().get(), unload, &unloaded).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(DaemonsTest, PoolExhaustionIsResourceExhausted) {
  PublishArtifact(store_, "big", 1024);  // 48 MiB of fp32 weights
  inferd_->Terminate();
  inferd_ = std::make_unique<DaemonProcess>(
      Binary("services/inferd/inferd"),
      std::vector<std::string>{"--store_path=" + store_, "--vram_budget=4MiB", "--device=cpu"});
  ASSERT_TRUE(inferd_->Start().ok());
  infer_ = v1::InferenceService::NewStub(
      grpc::CreateChannel(inferd_->grpc_address(), grpc::InsecureChannelCredentials()));
  v1::LoadModelRequest load;
  load.set_artifact_name("big");
  v1::LoadModelResponse loaded;
  grpc::Status status = infer_->LoadModel(Ctx().get(), load, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--vram_budget"));
}

TEST_F(DaemonsTest, ExportsRequestMetricsByMethodAndCode) {
  v1::ListArtifactsResponse list;
  ASSERT_TRUE(quant_->ListArtifacts(Ctx().get(), {}, &list).ok());
  v1::GetJobRequest get;
  get.set_id("bad");
  v1::Job job;
  (void)quant_->GetJob(Ctx().get(), get, &job);
  auto metrics = HttpGet(quantd_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_grpc_requests_total{method=\"/bitloom.v1."
                                  "QuantizationService/ListArtifacts\",code=\"OK\"} 1"));
  EXPECT_THAT(*metrics, HasSubstr("code=\"INVALID_ARGUMENT\""));
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_grpc_request_duration_seconds_bucket"));
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_store_artifacts 0"));
}

TEST_F(DaemonsTest, SigtermDrainsInFlightStreamsAndExitsZero) {
  // A WatchJob stream is the long-lived kind of call; it ends at once today, so hold a Health Watch
  // instead, which stays open until the server shuts down.
  auto channel = grpc::CreateChannel(quantd_->grpc_address(), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("bitloom.v1.QuantizationService");
  auto watch = stub->Watch(&context, request);
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  std::thread terminate([&] { EXPECT_EQ(quantd_->Terminate(), 0); });
  // The watcher sees NOT_SERVING before the server goes away.
  bool saw_not_serving = false;
  while (watch->Read(&response)) {
    if (response.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING) {
      saw_not_serving = true;
    }
  }
  terminate.join();
  EXPECT_TRUE(saw_not_serving);
  quantd_.reset();
}

TEST(DaemonFlagsTest, EnvironmentConfiguresAndBadValuesFailClearly) {
  const std::string store = testing::MakeTempDir("envstore");
  DaemonProcess from_env(Binary("services/quantd/quantd"), {},
                         {{"BITLOOM_QUANTD_STORE_PATH", store + "/nested"}});
  ASSERT_TRUE(from_env.Start().ok());
  EXPECT_EQ(from_env.Terminate(), 0);
  EXPECT_EQ(::access((store + "/nested").c_str(), F_OK), 0) << "store created from env";

  DaemonProcess bad(Binary("services/inferd/inferd"), {"--store_path=" + store},
                    {{"BITLOOM_INFERD_VRAM_BUDGET", "lots"}});
  absl::Status started = bad.Start();
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(std::string(started.message()), HasSubstr("--vram_budget: 'lots'"));
}

}  // namespace
}  // namespace bitloom
