// `bitloom bench`'s parts that run without a GPU: the streaming-latency clients against a real CPU
// inferd serving a tiny synthetic artifact (in process and through the CLI with --skip_gpu), the
// nearest-rank percentiles, and the weight bytes one decode step reads.
#include "bench_latency.h"

#include <grpcpp/grpcpp.h>
#include <stdio.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench_weight_bytes.h"
#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "daemon_process.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bitloom {
namespace {

using ::bitloom::testing::DaemonProcess;

constexpr char kArtifact[] = "tiny-synth";

std::string Binary(const char* relative) { return absl::StrCat(BITLOOM_BINARY_DIR, "/", relative); }

class BenchLatencyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    store_dir_ = new std::string(::bitloom::testing::MakeTempDir("bench_latency"));
    auto store = modelstore::ModelStore::Open(*store_dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto writer = (*store)->NewWriter(kArtifact, false);
    ASSERT_TRUE(writer.ok()) << writer.status();
    auto config = engine::SyntheticModelConfig("tiny");
    ASSERT_TRUE(config.ok());
    engine::SyntheticArtifactOptions options;
    options.bits_per_weight = 4.0;
    ASSERT_TRUE(engine::WriteSyntheticArtifact(*config, options, **writer, nullptr).ok());

    daemon_ = new DaemonProcess(Binary("services/inferd/inferd"),
                                {"--store_path=" + *store_dir_, "--vram_budget=1GiB",
                                 "--shutdown_grace=2s", "--threads=2"});
    ASSERT_TRUE(daemon_->Start().ok()) << daemon_->Log();
  }

  static void TearDownTestSuite() {
    if (daemon_ != nullptr) {
      daemon_->Terminate();
      delete daemon_;
      daemon_ = nullptr;
    }
    delete store_dir_;
    store_dir_ = nullptr;
  }

  static std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
  }

  // Loads the artifact as `model_id` (max batch 4, context 256).
  static void Load(const std::string& model_id) {
    auto stub = v1::InferenceService::NewStub(Channel());
    v1::LoadModelRequest load;
    load.set_artifact_name(kArtifact);
    load.set_model_id(model_id);
    load.set_context_length(256);
    load.set_max_batch_size(4);
    grpc::ClientContext context;
    v1::LoadModelResponse loaded;
    const grpc::Status status = stub->LoadModel(&context, load, &loaded);
    ASSERT_TRUE(status.ok()) << status.error_message() << daemon_->Log();
  }

  static inline std::string* store_dir_ = nullptr;
  static inline DaemonProcess* daemon_ = nullptr;
};

TEST_F(BenchLatencyTest, ConcurrentClientsTimeEveryToken) {
  Load("tiny-a");
  tools::LatencyBenchOptions options;
  options.model_id = "tiny-a";
  options.clients = 3;
  options.requests_per_client = 2;
  options.prompt_tokens = 16;
  options.max_new_tokens = 6;
  auto report = tools::RunLatencyBench(Channel(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->failed, 0) << report->first_error;
  EXPECT_EQ(report->requests, 6);
  // ignore_eos: every request generates exactly max_new_tokens.
  EXPECT_EQ(report->tokens, 6 * 6);
  ASSERT_EQ(report->ttft_seconds.size(), 6u);
  EXPECT_EQ(report->itl_seconds.size(), 6u * 5u);
  for (double t : report->ttft_seconds) EXPECT_GT(t, 0.0);
  for (double t : report->itl_seconds) EXPECT_GE(t, 0.0);
  EXPECT_GT(report->wall_seconds, 0.0);

  const nlohmann::json j = report->ToJson(options);
  EXPECT_EQ(j["requests"], 6);
  EXPECT_LE(j["ttft_ms"]["p50"].get<double>(), j["ttft_ms"]["p90"].get<double>());
  EXPECT_LE(j["ttft_ms"]["p90"].get<double>(), j["ttft_ms"]["p99"].get<double>());
  EXPECT_LE(j["itl_ms"]["p99"].get<double>(), j["itl_ms"]["max"].get<double>());
  EXPECT_EQ(j["itl_ms"]["count"], 30);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
}

TEST_F(BenchLatencyTest, UnknownModelIsNotFound) {
  tools::LatencyBenchOptions options;
  options.model_id = "absent";
  EXPECT_EQ(tools::RunLatencyBench(Channel(), options).status().code(),
            absl::StatusCode::kNotFound);
  options.clients = 0;
  EXPECT_EQ(tools::RunLatencyBench(Channel(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The CLI end to end without a GPU: bench loads the artifact into inferd and prints the JSON.
TEST_F(BenchLatencyTest, CliSkipGpuPrintsTheLatencyReport) {
  const std::string command = absl::StrCat(Binary("tools/bitloom/bitloom"), " bench ", kArtifact,
                                           " --skip_gpu --inferd=", daemon_->grpc_address(),
                                           " --model_id=tiny-cli --context_length=128 "
                                           "--max_batch_size=2 --clients=2 --requests_per_client=1",
                                           " --prompt_tokens=8 --max_new_tokens=4 2>/dev/null");
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  ASSERT_EQ(::pclose(pipe), 0) << output;
  const nlohmann::json j = nlohmann::json::parse(output, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << output;
  EXPECT_EQ(j["artifact"], kArtifact);
  EXPECT_EQ(j["gpu"]["skipped"], "--skip_gpu");
  EXPECT_EQ(j["latency"]["requests"], 2);
  EXPECT_EQ(j["latency"]["failed"], 0);
  EXPECT_EQ(j["latency"]["tokens"], 8);
  EXPECT_EQ(j["latency"]["model_id"], "tiny-cli");
}

TEST(BenchPercentile, NearestRank) {
  std::vector<double> v = {5, 1, 4, 2, 3, 6, 7, 8, 9, 10};
  EXPECT_EQ(tools::Percentile(v, 50), 5);
  EXPECT_EQ(tools::Percentile(v, 90), 9);
  EXPECT_EQ(tools::Percentile(v, 99), 10);
  EXPECT_EQ(tools::Percentile(v, 0), 1);
  EXPECT_EQ(tools::Percentile(v, 100), 10);
  std::vector<double> empty;
  EXPECT_EQ(tools::Percentile(empty, 50), 0);
}

// Bytes per decoded token of the Llama-3-8B shape at 2.5 bits, from a manifest with the planned
// sizes.
TEST(BenchWeightBytes, CountsDecoderHeadNormsAndOneEmbeddingRow) {
  for (const char* shape : {"llama3-8b", "smollm2-135m"}) {
    auto config = engine::SyntheticModelConfig(shape);
    ASSERT_TRUE(config.ok());
    engine::SyntheticArtifactOptions options;
    options.bits_per_weight = 2.5;
    auto plan = engine::PlanSyntheticArtifact(*config, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    v1::ArtifactManifest manifest;
    *manifest.mutable_config() = *config;
    uint64_t embedding = 0, head = 0, norms = 0;
    for (const engine::SyntheticTensor& t : plan->tensors) {
      v1::TensorEntry* e = manifest.add_tensors();
      *e = t.entry;
      e->set_size(t.bytes);
      if (t.entry.name() == "embed_tokens.weight") embedding = t.bytes;
      if (t.entry.name() == "lm_head.weight") head = t.bytes;
      if (t.entry.codec() == v1::CODEC_F32) norms += t.bytes;
    }
    const tools::DecodeWeightBytes bytes = tools::DecodeBytesPerToken(manifest);
    EXPECT_EQ(bytes.decoder_linears, plan->decoder_linear_bytes) << shape;
    EXPECT_EQ(bytes.norms_and_other, norms) << shape;
    if (config->tie_word_embeddings()) {
      EXPECT_EQ(bytes.head, embedding);
      EXPECT_EQ(bytes.embedding_row, 0u);
    } else {
      EXPECT_EQ(bytes.head, head);
      EXPECT_EQ(bytes.embedding_row, 2u * config->hidden_size());
    }
    EXPECT_EQ(bytes.total(),
              bytes.decoder_linears + bytes.head + bytes.norms_and_other + bytes.embedding_row);
  }
}

}  // namespace
}  // namespace bitloom
