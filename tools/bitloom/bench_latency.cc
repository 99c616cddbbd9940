#include "bench_latency.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "health_client.h"

namespace bitloom::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// What one request measured.
struct RequestTiming {
  bool ok = false;
  std::string error;
  int64_t tokens = 0;
  double ttft = 0;
  std::vector<double> itl;
};

RequestTiming TimeOneRequest(v1::InferenceService::Stub& stub, const v1::GenerateRequest& request,
                             double timeout_seconds) {
  RequestTiming out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
  const Clock::time_point sent = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse message;
  Clock::time_point last = sent;
  while (reader->Read(&message)) {
    const int k = message.tokens_size();
    if (k == 0) continue;
    const Clock::time_point now = Clock::now();
    if (out.tokens == 0) {
      out.ttft = Seconds(now - sent);
      for (int i = 1; i < k; ++i) out.itl.push_back(0.0);  // arrived together with the first
    } else {
      for (int i = 0; i < k; ++i) out.itl.push_back(Seconds(now - last) / k);
    }
    out.tokens += k;
    last = now;
  }
  const grpc::Status status = reader->Finish();
  out.ok = status.ok();
  if (!status.ok())
    out.error = absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
  return out;
}

nlohmann::json Summary(std::vector<double> seconds) {
  nlohmann::json j;
  const double mean =
      seconds.empty() ? 0.0 : std::accumulate(seconds.begin(), seconds.end(), 0.0) / seconds.size();
  j["p50"] = 1e3 * Percentile(seconds, 50);
  j["p90"] = 1e3 * Percentile(seconds, 90);
  j["p99"] = 1e3 * Percentile(seconds, 99);
  j["max"] = 1e3 * Percentile(seconds, 100);
  j["mean"] = 1e3 * mean;
  j["count"] = seconds.size();
  return j;
}

}  // namespace

double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  // Nearest rank: the smallest value with at least p% of the values at or below it.
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  return values[index];
}

nlohmann::json LatencyReport::ToJson(const LatencyBenchOptions& options) const {
  nlohmann::json j;
  j["model_id"] = options.model_id;
  j["clients"] = options.clients;
  j["requests_per_client"] = options.requests_per_client;
  j["prompt_tokens"] = options.prompt_tokens;
  j["max_new_tokens"] = options.max_new_tokens;
  j["requests"] = requests;
  j["failed"] = failed;
  if (!first_error.empty()) j["first_error"] = first_error;
  j["tokens"] = tokens;
  j["wall_seconds"] = wall_seconds;
  j["tokens_per_second"] = wall_seconds > 0 ? static_cast<double>(tokens) / wall_seconds : 0.0;
  j["ttft_ms"] = Summary(ttft_seconds);
  j["itl_ms"] = Summary(itl_seconds);
  return j;
}

absl::StatusOr<LatencyReport> RunLatencyBench(const std::shared_ptr<grpc::Channel>& channel,
                                              const LatencyBenchOptions& options) {
  if (options.clients <= 0 || options.requests_per_client <= 0 || options.prompt_tokens <= 0 ||
      options.max_new_tokens <= 0) {
    return absl::InvalidArgumentError(
        "clients, requests_per_client, prompt_tokens and max_new_tokens must be positive");
  }
  auto stub = v1::InferenceService::NewStub(channel);
  // The vocabulary bounds the random prompt; asking also fails fast when the model is not loaded.
  uint32_t vocab = 0;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ListModelsResponse models;
    const grpc::Status status = stub->ListModels(&context, {}, &models);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "inferd ListModels: ", CodeName(status.error_code()), ": ", status.error_message()));
    }
    for (const v1::ModelInfo& m : models.models()) {
      if (m.model_id() == options.model_id) vocab = m.vocab_size();
    }
    if (vocab == 0) {
      return absl::NotFoundError(
          absl::StrCat("model_id: '", options.model_id, "' is not loaded in inferd"));
    }
  }

  std::mutex mu;
  LatencyReport report;
  auto client = [&](int c) {
    std::mt19937_64 rng(options.seed + static_cast<uint64_t>(c));
    std::uniform_int_distribution<uint32_t> token(0, vocab - 1);
    for (int r = 0; r < options.requests_per_client; ++r) {
      v1::GenerateRequest request;
      request.set_model_id(options.model_id);
      for (int i = 0; i < options.prompt_tokens; ++i)
        request.mutable_token_ids()->add_ids(token(rng));
      v1::SamplingParams* sampling = request.mutable_sampling();
      sampling->set_temperature(0);
      sampling->set_max_new_tokens(static_cast<uint32_t>(options.max_new_tokens));
      sampling->set_ignore_eos(true);
      RequestTiming t = TimeOneRequest(*stub, request, options.timeout_seconds);
      std::lock_guard<std::mutex> lock(mu);
      report.tokens += t.tokens;
      if (!t.ok) {
        ++report.failed;
        if (report.first_error.empty()) report.first_error = t.error;
        continue;
      }
      ++report.requests;
      if (t.tokens > 0) report.ttft_seconds.push_back(t.ttft);
      report.itl_seconds.insert(report.itl_seconds.end(), t.itl.begin(), t.itl.end());
    }
  };
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < options.clients; ++c) threads.emplace_back(client, c);
  for (std::thread& t : threads) t.join();
  report.wall_seconds = Seconds(Clock::now() - start);
  return report;
}

}  // namespace bitloom::tools
