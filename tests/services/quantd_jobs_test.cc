// quantd's quantization jobs end to end: a real quantd process on loopback, a real gRPC client,
// and a tiny synthetic Hugging Face model written by the test (safetensors + config.json +
// tokenizer.json) small enough for CI. Covers create/watch/publish, every class of bad input,
// cancellation leaving nothing behind, queue order, and the issue's crash-safety requirement:
// SIGKILL mid-job, restart, resume, and an artifact byte-identical to an uninterrupted run.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/quantization.grpc.pb.h"
#include "daemon_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bitloom {
namespace {

namespace fs = std::filesystem;
using ::bitloom::testing::DaemonProcess;
using ::bitloom::testing::HttpGet;
using ::testing::HasSubstr;

struct ModelShape {
  int layers = 4;
  int hidden = 128;
  int intermediate = 256;
  int heads = 4;
  int kv_heads = 2;
  int vocab = 32;
};

// A Llama model as a Hugging Face directory: F32 safetensors with Gaussian weights (seeded, so
// every test run writes the same bytes), an untied lm_head, and a 32-letter BPE tokenizer.
void WriteHfModel(const std::string& dir, const ModelShape& m,
                  const std::string& model_type = "llama") {
  fs::create_directories(dir);
  const int head_dim = m.hidden / m.heads;
  const auto h = static_cast<uint64_t>(m.hidden), in = static_cast<uint64_t>(m.intermediate);
  const uint64_t q = static_cast<uint64_t>(m.heads * head_dim),
                 kv = static_cast<uint64_t>(m.kv_heads * head_dim);
  std::vector<std::pair<std::string, std::vector<uint64_t>>> tensors = {
      {"model.embed_tokens.weight", {static_cast<uint64_t>(m.vocab), h}},
      {"model.norm.weight", {h}},
      {"lm_head.weight", {static_cast<uint64_t>(m.vocab), h}}};
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    tensors.push_back({p + "input_layernorm.weight", {h}});
    tensors.push_back({p + "self_attn.q_proj.weight", {q, h}});
    tensors.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    tensors.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    tensors.push_back({p + "self_attn.o_proj.weight", {h, q}});
    tensors.push_back({p + "post_attention_layernorm.weight", {h}});
    tensors.push_back({p + "mlp.gate_proj.weight", {in, h}});
    tensors.push_back({p + "mlp.up_proj.weight", {in, h}});
    tensors.push_back({p + "mlp.down_proj.weight", {h, in}});
  }
  std::mt19937_64 rng(1234);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::string header = "{", data;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 1;
    std::string dims;
    for (uint64_t d : shape) {
      n *= d;
      absl::StrAppend(&dims, dims.empty() ? "" : ",", d);
    }
    absl::StrAppend(&header, header.size() > 1 ? "," : "", "\"", name,
                    "\":{\"dtype\":\"F32\",\"shape\":[", dims, "],\"data_offsets\":[", data.size(),
                    ",", data.size() + 4 * n, "]}");
    const bool norm = shape.size() == 1;
    const float scale = norm ? 0.0f : 1.0f / std::sqrt(static_cast<float>(shape[1]));
    for (uint64_t i = 0; i < n; ++i) {
      const float v = norm ? 1.0f : gauss(rng) * scale;
      data.append(reinterpret_cast<const char*>(&v), 4);
    }
  }
  header += "}";
  const uint64_t header_size = header.size();
  std::ofstream out(dir + "/model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&header_size), 8);
  out << header << data;
  std::ofstream(dir + "/config.json")
      << "{\"model_type\":\"" << model_type << "\",\"vocab_size\":" << m.vocab
      << ",\"hidden_size\":" << m.hidden << ",\"intermediate_size\":" << m.intermediate
      << ",\"num_hidden_layers\":" << m.layers << ",\"num_attention_heads\":" << m.heads
      << ",\"num_key_value_heads\":" << m.kv_heads << ",\"head_dim\":" << head_dim
      << ",\"max_position_embeddings\":2048,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,"
      << "\"bos_token_id\":0,\"eos_token_id\":1,\"tie_word_embeddings\":false}";
  std::string vocab;
  for (int i = 0; i < m.vocab; ++i) {
    absl::StrAppend(&vocab, i == 0 ? "" : ", ", "\"", std::string(1, static_cast<char>('a' + i % 26)),
                    i < 26 ? "" : std::to_string(i), "\": ", i);
  }
  std::ofstream(dir + "/tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {)" << vocab << R"(}, "merges": []}})";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Regular files under `dir` (recursively), as paths relative to it.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       ++it) {
    if (it->is_regular_file()) files.push_back(fs::relative(it->path(), dir).string());
  }
  return files;
}

std::string Binary() { return absl::StrCat(BITLOOM_BINARY_DIR, "/services/quantd/quantd"); }

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 20) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

bool Finished(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED ||
         s == v1::JOB_STATE_CANCELLED;
}

class QuantdJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("quantd_jobs");
    ASSERT_FALSE(root_.empty());
    store_ = root_ + "/store";
    model_ = root_ + "/model";
    WriteHfModel(model_, ModelShape{});
  }
  void TearDown() override {
    if (quantd_ != nullptr) {
      EXPECT_EQ(quantd_->Terminate(), 0) << quantd_->Log();
    }
  }

  void StartQuantd(const std::string& store, std::vector<std::string> extra = {}) {
    extra.push_back("--store_path=" + store);
    extra.push_back("--shutdown_grace=5s");
    extra.push_back("--threads=2");
    quantd_ = std::make_unique<DaemonProcess>(Binary(), extra);
    absl::Status started = quantd_->Start();
    ASSERT_TRUE(started.ok()) << started << quantd_->Log();
    stub_ = v1::QuantizationService::NewStub(
        grpc::CreateChannel(quantd_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  v1::CreateJobRequest Request(const std::string& name, const std::string& model = "") const {
    v1::CreateJobRequest r;
    r.mutable_hugging_face()->set_directory(model.empty() ? model_ : model);
    r.set_artifact_name(name);
    r.set_target_bits_per_weight(2.5);
    r.mutable_calibration()->set_rows(8);
    r.mutable_calibration()->set_tokens_per_row(64);
    r.set_seed(7);
    return r;
  }

  v1::Job Create(const v1::CreateJobRequest& request) {
    v1::Job job;
    grpc::Status s = stub_->CreateJob(Ctx().get(), request, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }

  grpc::Status CreateError(const v1::CreateJobRequest& request) {
    v1::Job job;
    return stub_->CreateJob(Ctx().get(), request, &job);
  }

  // Every event of WatchJob until the stream ends.
  std::vector<v1::Job> Watch(const std::string& id, grpc::Status* status = nullptr) {
    v1::WatchJobRequest request;
    request.set_id(id);
    auto context = Ctx(600);
    auto reader = stub_->WatchJob(context.get(), request);
    std::vector<v1::Job> events;
    v1::JobEvent event;
    while (reader->Read(&event)) events.push_back(event.job());
    grpc::Status s = reader->Finish();
    if (status != nullptr) *status = s;
    return events;
  }

  v1::Job WaitForEnd(const std::string& id) {
    grpc::Status status;
    auto events = Watch(id, &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(events.empty());
    return events.empty() ? v1::Job() : events.back();
  }

  // Waits until the job's checkpoint directory holds at least one block checkpoint.
  bool WaitForCheckpoint(const std::string& store, const std::string& id) {
    const std::string dir = absl::StrCat(store, "/.jobs/", id, "/checkpoints");
    for (int i = 0; i < 60000; ++i) {
      for (const auto& f : FilesUnder(dir)) {
        if (absl::EndsWith(f, ".ckpt")) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  std::string root_, store_, model_;
  std::unique_ptr<DaemonProcess> quantd_;
  std::unique_ptr<v1::QuantizationService::Stub> stub_;
};

TEST_F(QuantdJobsTest, CreatesWatchesAndPublishesAtTheTargetBits) {
  StartQuantd(store_);
  // Every state is exported from startup, before any job exists.
  auto metrics = HttpGet(quantd_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) {
    EXPECT_THAT(*metrics, HasSubstr(absl::StrCat("bitloom_quantd_jobs{state=\"", state, "\"} 0")));
  }
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_calibration_tokens_total 0"));

  const v1::Job created = Create(Request("tiny-2.5"));
  EXPECT_EQ(created.id().size(), 32u);
  EXPECT_EQ(created.state(), v1::JOB_STATE_QUEUED);
  grpc::Status status;
  const std::vector<v1::Job> events = Watch(created.id(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GE(events.size(), 3u);
  EXPECT_FALSE(Finished(events.front().state()));
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GE(events[i].progress().fraction_done(), events[i - 1].progress().fraction_done());
  }
  const v1::Job& done = events.back();
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << quantd_->Log();
  EXPECT_EQ(done.progress().stage(), v1::JOB_STAGE_DONE);
  EXPECT_DOUBLE_EQ(done.progress().fraction_done(), 1.0);
  EXPECT_EQ(done.progress().num_layers(), 4u);
  EXPECT_NEAR(done.achieved_bits_per_weight(), 2.5, 0.01);
  // The job priced its tensors through the model's head (quantd's runner exposes the output
  // layer): the timings line reports the time spent on the output's Fisher information.
  std::smatch fisher;
  const std::string log = quantd_->Log();
  ASSERT_TRUE(std::regex_search(log, fisher, std::regex("output Fisher ([0-9.e+-]+)"))) << log;
  EXPECT_GT(std::stod(fisher[1].str()), 0.0) << log;

  v1::ListArtifactsResponse artifacts;
  ASSERT_TRUE(stub_->ListArtifacts(Ctx().get(), {}, &artifacts).ok());
  ASSERT_EQ(artifacts.artifacts_size(), 1);
  EXPECT_EQ(artifacts.artifacts(0).name(), "tiny-2.5");
  EXPECT_NEAR(artifacts.artifacts(0).bits_per_weight(), 2.5, 0.01);
  EXPECT_EQ(artifacts.artifacts(0).created_unix_ms(), created.created_unix_ms());
  v1::DescribeArtifactRequest describe;
  describe.set_name("tiny-2.5");
  describe.set_verify_checksums(true);
  v1::DescribeArtifactResponse description;
  ASSERT_TRUE(stub_->DescribeArtifact(Ctx().get(), describe, &description).ok());
  int quantized = 0;
  for (const auto& t : description.manifest().tensors()) {
    if (t.codec() == v1::CODEC_HADAMARD_SCALAR) ++quantized;
  }
  EXPECT_EQ(quantized, 4 * 7 + 1);  // every decoder linear layer, and the head
  EXPECT_EQ(description.manifest().calibration().seed(), 7u);
  EXPECT_EQ(description.manifest().source().digest().size(), 64u);
  EXPECT_DOUBLE_EQ(description.manifest().head_bits_per_weight(), 6.125);

  // Nothing left behind but the job record.
  EXPECT_THAT(FilesUnder(store_ + "/.tmp"), ::testing::IsEmpty());
  EXPECT_THAT(FilesUnder(absl::StrCat(store_, "/.jobs/", created.id())),
              ::testing::ElementsAre("job.pb"));

  v1::GetJobRequest get;
  get.set_id(created.id());
  v1::Job fetched;
  ASSERT_TRUE(stub_->GetJob(Ctx().get(), get, &fetched).ok());
  EXPECT_EQ(fetched.state(), v1::JOB_STATE_SUCCEEDED);
  // Watching a finished job: one event, then the stream ends.
  EXPECT_EQ(Watch(created.id()).size(), 1u);

  metrics = HttpGet(quantd_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_jobs{state=\"succeeded\"} 1"));
  EXPECT_THAT(*metrics, HasSubstr("bitloom_quantd_job_duration_seconds_count 1"));
  EXPECT_THAT(*metrics, ::testing::Not(HasSubstr("bitloom_quantd_calibration_tokens_total 0\n")));
}

TEST_F(QuantdJobsTest, BadInputsNameTheField) {
  StartQuantd(store_);
  auto expect = [&](const v1::CreateJobRequest& r, grpc::StatusCode code, const std::string& field) {
    grpc::Status s = CreateError(r);
    EXPECT_EQ(s.error_code(), code) << field << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  };
  v1::CreateJobRequest r = Request("x");
  r.set_target_bits_per_weight(9.5);
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "target_bits_per_weight");
  r = Request("x");
  r.set_head_bits_per_weight(1);
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "head_bits_per_weight");
  r = Request("x");
  r.set_method(v1::QUANTIZATION_METHOD_UNIFORM_LDLQ);
  r.set_target_bits_per_weight(2.5);  // the uniform methods take a whole code width
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "target_bits_per_weight");
  r = Request("x");
  r.set_method(static_cast<v1::QuantizationMethod>(17));
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "method");
  r = Request("../x");
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "artifact_name");
  r = Request("x", root_ + "/absent");
  expect(r, grpc::StatusCode::NOT_FOUND, "hugging_face.directory");

  const std::string gpt2 = root_ + "/gpt2";
  WriteHfModel(gpt2, ModelShape{}, "gpt2");
  expect(Request("x", gpt2), grpc::StatusCode::INVALID_ARGUMENT, "hugging_face.directory");
  const std::string broken = root_ + "/broken";
  WriteHfModel(broken, ModelShape{});
  std::ofstream(broken + "/model.safetensors") << "not safetensors";
  expect(Request("x", broken), grpc::StatusCode::INVALID_ARGUMENT, "hugging_face.directory");

  r = Request("x");
  r.mutable_calibration()->add_corpus_files(root_ + "/absent.txt");
  expect(r, grpc::StatusCode::NOT_FOUND, "calibration.corpus_files[0]");
  std::ofstream(root_ + "/binary.txt") << std::string("abc\xff\xfe", 5);
  r = Request("x");
  r.mutable_calibration()->add_corpus_files(root_ + "/binary.txt");
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "calibration.corpus_files[0]");
  std::ofstream(root_ + "/empty.txt").flush();
  r = Request("x");
  r.mutable_calibration()->add_corpus_files(root_ + "/empty.txt");
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "calibration.corpus_files[0]");
  r = Request("x");
  r.mutable_calibration()->set_rows(5000);
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "calibration.rows");
  r = Request("x");
  r.mutable_calibration()->set_random_rows_fraction(1.5);
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "calibration.random_rows_fraction");
  std::ofstream(root_ + "/corpus.txt") << "abc";
  r = Request("x");
  r.mutable_calibration()->set_self_generated(true);
  r.mutable_calibration()->add_corpus_files(root_ + "/corpus.txt");
  expect(r, grpc::StatusCode::INVALID_ARGUMENT, "calibration.corpus_files");

  // Name taken: by a published artifact (unless overwrite), and by a job that is not finished.
  const v1::Job first = Create(Request("taken"));
  expect(Request("taken"), grpc::StatusCode::ALREADY_EXISTS, "artifact_name");
  ASSERT_EQ(WaitForEnd(first.id()).state(), v1::JOB_STATE_SUCCEEDED);
  expect(Request("taken"), grpc::StatusCode::ALREADY_EXISTS, "artifact_name");
  r = Request("taken");
  r.set_overwrite(true);
  EXPECT_EQ(WaitForEnd(Create(r).id()).state(), v1::JOB_STATE_SUCCEEDED);

  v1::GetJobRequest get;
  get.set_id("nope");
  v1::Job job;
  EXPECT_EQ(stub_->GetJob(Ctx().get(), get, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  get.set_id(std::string(32, 'a'));
  EXPECT_EQ(stub_->GetJob(Ctx().get(), get, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ListJobsRequest list;
  list.set_page_token("garbage");
  v1::ListJobsResponse jobs;
  EXPECT_EQ(stub_->ListJobs(Ctx().get(), list, &jobs).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// Calibration the model samples itself, a quarter of the rows replaced by random ids: the job
// publishes, and records the settings in the manifest.
TEST_F(QuantdJobsTest, CalibratesOnSelfGeneratedRowsMixedWithRandomRows) {
  StartQuantd(store_);
  v1::CreateJobRequest r = Request("self-generated");
  r.mutable_calibration()->set_self_generated(true);
  r.mutable_calibration()->set_random_rows_fraction(0.25);
  const v1::Job created = Create(r);
  grpc::Status status;
  const std::vector<v1::Job> events = Watch(created.id(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED)
      << events.back().error() << quantd_->Log();
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GE(events[i].progress().fraction_done(), events[i - 1].progress().fraction_done());
  }
  v1::DescribeArtifactRequest describe;
  describe.set_name("self-generated");
  v1::DescribeArtifactResponse description;
  ASSERT_TRUE(stub_->DescribeArtifact(Ctx().get(), describe, &description).ok());
  const v1::CalibrationSettings& calibration = description.manifest().calibration();
  EXPECT_TRUE(calibration.self_generated());
  EXPECT_DOUBLE_EQ(calibration.random_rows_fraction(), 0.25);
  EXPECT_EQ(calibration.rows(), 8u);
  EXPECT_EQ(calibration.tokens_per_row(), 64u);
  EXPECT_EQ(calibration.seed(), 7u);
  EXPECT_NEAR(description.manifest().bits_per_weight(), 2.5, 0.01);
}

TEST_F(QuantdJobsTest, RefusesAJobTheDiskCannotHold) {
  StartQuantd(store_, {"--disk_reserve_bytes=" + std::to_string(uint64_t{1} << 62)});
  grpc::Status s = CreateError(Request("x"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("free"));
}

// A model large enough that a job runs for a few seconds on a CI core: time to cancel or kill it
// between its first checkpoint and its end.
ModelShape SlowShape() {
  ModelShape m;
  m.layers = 8;
  return m;
}

TEST_F(QuantdJobsTest, CancelLeavesNothingBehind) {
  const std::string slow = root_ + "/slow";
  WriteHfModel(slow, SlowShape());
  StartQuantd(store_);
  v1::CreateJobRequest r = Request("cancelled", slow);
  const v1::Job job = Create(r);
  ASSERT_TRUE(WaitForCheckpoint(store_, job.id()));
  const auto start = std::chrono::steady_clock::now();
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  v1::Job cancelled;
  grpc::Status s = stub_->CancelJob(Ctx().get(), cancel, &cancelled);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // No temp file, no checkpoint, no artifact: only the job's record.
  EXPECT_THAT(FilesUnder(store_ + "/.tmp"), ::testing::IsEmpty());
  EXPECT_THAT(FilesUnder(absl::StrCat(store_, "/.jobs/", job.id())),
              ::testing::ElementsAre("job.pb"));
  EXPECT_FALSE(fs::exists(store_ + "/cancelled.bitloom"));
  // Cancelling a finished job leaves it as it is.
  ASSERT_TRUE(stub_->CancelJob(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(QuantdJobsTest, RunsOneJobAtATimeInOrderAndListsNewestFirst) {
  StartQuantd(store_);
  std::vector<v1::Job> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(Create(Request(absl::StrCat("q", i))));
  // A queued job can be cancelled at once.
  const v1::Job extra = Create(Request("q-cancelled"));
  v1::CancelJobRequest cancel;
  cancel.set_id(extra.id());
  v1::Job cancelled;
  ASSERT_TRUE(stub_->CancelJob(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);

  std::vector<v1::Job> done;
  for (const auto& job : jobs) done.push_back(WaitForEnd(job.id()));
  for (size_t i = 0; i < done.size(); ++i) {
    EXPECT_EQ(done[i].state(), v1::JOB_STATE_SUCCEEDED) << done[i].error();
    if (i > 0) {
      EXPECT_LE(done[i - 1].finished_unix_ms(), done[i].finished_unix_ms());
    }
  }
  // Newest first, two per page.
  std::vector<std::string> listed;
  v1::ListJobsRequest list;
  list.set_page_size(2);
  do {
    v1::ListJobsResponse page;
    ASSERT_TRUE(stub_->ListJobs(Ctx().get(), list, &page).ok());
    EXPECT_LE(page.jobs_size(), 2);
    for (const auto& j : page.jobs()) listed.push_back(j.id());
    list.set_page_token(page.next_page_token());
  } while (!list.page_token().empty());
  EXPECT_THAT(listed, ::testing::ElementsAre(extra.id(), jobs[2].id(), jobs[1].id(), jobs[0].id()));
}

// The issue's crash-safety test. The same job (same id, creation time and seed) runs twice: in
// store A it is SIGKILLed after its first block checkpoint and finished by a restarted quantd; in
// store B (a copy of its record only) it runs uninterrupted. The artifacts must be byte-identical.
TEST_F(QuantdJobsTest, SigkillMidJobResumesToAByteIdenticalArtifact) {
  const std::string slow = root_ + "/slow";
  WriteHfModel(slow, SlowShape());
  const std::string store_a = root_ + "/store_a", store_b = root_ + "/store_b";
  StartQuantd(store_a);
  v1::CreateJobRequest r = Request("resumed", slow);
  const v1::Job job = Create(r);
  const std::string record = absl::StrCat("/.jobs/", job.id(), "/job.pb");
  fs::create_directories(store_b + "/.jobs/" + job.id());
  fs::copy_file(store_a + record, store_b + record);

  ASSERT_TRUE(WaitForCheckpoint(store_a, job.id())) << quantd_->Log();
  quantd_.reset();  // SIGKILL
  ASSERT_FALSE(fs::exists(store_a + "/resumed.bitloom")) << "the job finished before the kill";
  bool checkpoint_survived = false;
  for (const auto& f : FilesUnder(absl::StrCat(store_a, "/.jobs/", job.id(), "/checkpoints"))) {
    checkpoint_survived |= absl::EndsWith(f, ".ckpt");
  }
  EXPECT_TRUE(checkpoint_survived);

  StartQuantd(store_a);
  const v1::Job resumed = WaitForEnd(job.id());
  ASSERT_EQ(resumed.state(), v1::JOB_STATE_SUCCEEDED) << resumed.error() << quantd_->Log();
  std::smatch match;
  const std::string log = quantd_->Log();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("([0-9]+) blocks resumed"))) << log;
  EXPECT_GT(std::stoi(match[1]), 0) << log;
  EXPECT_THAT(FilesUnder(store_a + "/.tmp"), ::testing::IsEmpty());  // the killed run's temp file
  EXPECT_EQ(quantd_->Terminate(), 0);

  StartQuantd(store_b);
  const v1::Job uninterrupted = WaitForEnd(job.id());
  ASSERT_EQ(uninterrupted.state(), v1::JOB_STATE_SUCCEEDED) << uninterrupted.error();
  EXPECT_THAT(quantd_->Log(), HasSubstr(" 0 blocks resumed"));

  const std::string a = ReadFile(store_a + "/resumed.bitloom");
  const std::string b = ReadFile(store_b + "/resumed.bitloom");
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "the resumed artifact differs from the uninterrupted one";
}

// SIGTERM pauses the running job at its next tensor (it keeps its checkpoints) and leaves the
// queue on disk; the next quantd resumes the running job first, then runs the queue in order.
TEST_F(QuantdJobsTest, RestartKeepsTheRunningAndQueuedJobs) {
  const std::string slow = root_ + "/slow";
  WriteHfModel(slow, SlowShape());
  StartQuantd(store_);
  v1::CreateJobRequest r = Request("first", slow);
  const v1::Job first = Create(r);
  const v1::Job second = Create(Request("second"));
  const v1::Job third = Create(Request("third"));
  ASSERT_TRUE(WaitForCheckpoint(store_, first.id()));
  EXPECT_EQ(quantd_->Terminate(), 0) << quantd_->Log();
  quantd_.reset();

  StartQuantd(store_);
  v1::GetJobRequest get;
  get.set_id(third.id());
  v1::Job queued;
  ASSERT_TRUE(stub_->GetJob(Ctx().get(), get, &queued).ok());
  EXPECT_FALSE(Finished(queued.state()));
  const v1::Job a = WaitForEnd(first.id()), b = WaitForEnd(second.id()),
                c = WaitForEnd(third.id());
  for (const v1::Job* j : {&a, &b, &c}) {
    EXPECT_EQ(j->state(), v1::JOB_STATE_SUCCEEDED) << j->error();
  }
  EXPECT_LE(a.finished_unix_ms(), b.finished_unix_ms());
  EXPECT_LE(b.finished_unix_ms(), c.finished_unix_ms());
  EXPECT_THAT(quantd_->Log(), ::testing::ContainsRegex("[1-9][0-9]* blocks resumed"));
}

}  // namespace
}  // namespace bitloom
