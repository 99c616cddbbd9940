// The serving-latency part of `bitloom bench`: N concurrent clients stream Generate from a running
// inferd and time every token as it arrives — time to first token (TTFT, from sending the request
// to the first message carrying a token) and inter-token latency (ITL, between successive tokens of
// one stream; a message carrying k tokens counts k gaps of a k-th of its wait). Independent of the
// GPU engine: any inferd, CPU or GPU, is measured the same way.
//
// Every request is the same shape: `prompt_tokens` random token ids (from `seed`, below the
// model's vocabulary), greedy, ignore_eos, exactly `max_new_tokens` generated, so the load is fixed
// whatever the model says. Each client sends `requests_per_client` requests one after another.
// Thread-safe: RunLatencyBench keeps no state; it runs one thread per client.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {

struct LatencyBenchOptions {
  std::string model_id;  // a model loaded in inferd
  int clients = 4;       // concurrent streams
  int requests_per_client = 4;
  int prompt_tokens = 128;
  int max_new_tokens = 64;
  uint64_t seed = 1;
  double timeout_seconds = 600;  // per request
};

// Nearest-rank percentiles (p in [0, 100]) of `values`, which is sorted in place. 0 when empty.
double Percentile(std::vector<double>& values, double p);

struct LatencyReport {
  int requests = 0;                  // completed
  int failed = 0;                    // requests whose stream ended with an error
  std::string first_error;           // the first of those errors
  int64_t tokens = 0;                // generated tokens received
  double wall_seconds = 0;           // the whole run
  std::vector<double> ttft_seconds;  // one per completed request
  std::vector<double> itl_seconds;   // one per token after the first of each request

  // {"clients", "requests", "failed", "tokens", "wall_seconds", "tokens_per_second",
  //  "ttft_ms": {"p50","p90","p99","mean"}, "itl_ms": {...}}
  nlohmann::json ToJson(const LatencyBenchOptions& options) const;
};

// INVALID_ARGUMENT for non-positive counts; NOT_FOUND (from inferd) when the model is not loaded.
// Request failures are counted in the report, not returned, so a partly failing server still
// yields its numbers.
absl::StatusOr<LatencyReport> RunLatencyBench(const std::shared_ptr<grpc::Channel>& channel,
                                              const LatencyBenchOptions& options);

}  // namespace bitloom::tools
