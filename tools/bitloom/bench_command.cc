#include "bench_command.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench_gpu.h"
#include "bench_latency.h"
#include "bench_weight_bytes.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "health_client.h"

ABSL_FLAG(std::string, batches, "1,4,16", "bench: decode batch sizes, comma-separated");
ABSL_FLAG(std::string, prefill, "512,2048", "bench: prefill lengths in tokens, comma-separated");
ABSL_FLAG(int, steps, 64, "bench: timed decode steps per batch size");
ABSL_FLAG(int, warmup_steps, 8, "bench: untimed decode steps before them");
ABSL_FLAG(int, decode_context, 512, "bench: tokens in each sequence before decode is timed");
ABSL_FLAG(int, prefill_repeats, 3, "bench: timed prefills per length (after one warm-up)");
ABSL_FLAG(int, prefill_chunk, 256, "bench: tokens per prefill chunk of the GPU model");
ABSL_FLAG(bool, cuda_graphs, true, "bench: replay decode steps as CUDA graphs");
ABSL_FLAG(bool, rotating_gemv, true,
          "bench: batch-1 GEMVs rotate their own input where it fits one wave (false: rotation kernels)");
ABSL_FLAG(bool, streamed_gemv, false,
          "bench: let decode GEMVs stream weights through shared memory where the kernel alone is "
          "faster (sm_90; false: the register pipeline everywhere)");
ABSL_FLAG(bool, tiled_gemv, true,
          "bench: rewrite 2-, 3-, 4- and 8-bit weights into the tiled layout at load "
          "(GpuModelOptions::tiled_gemv; false: the artifact layout everywhere)");
ABSL_FLAG(bool, fuse_attention_combine, true,
          "bench: the o_proj input rotation merges decode attention's splits (GpuModelOptions::"
          "fuse_attention_combine; false: the combine kernel)");
ABSL_FLAG(bool, offset_terms, true,
          "bench: batch-1 GEMVs tiled at K = 2 take their input's offset terms from its rotation "
          "(GpuModelOptions::offset_terms; false: the activation-sum mma)");
ABSL_FLAG(double, vram_fraction, 0.9, "bench: fraction of free GPU memory for the pool");
ABSL_FLAG(double, vram_budget_gib, 0,
          "bench: the pool's exact size in GiB (e.g. 24 to check a memory target); 0: --vram_fraction");
ABSL_FLAG(bool, embedding_in_host, false, "bench: keep the token embedding in pinned host memory");
ABSL_FLAG(bool, dependent_launch, true,
          "bench: let decode kernels start while the kernel ahead finishes (Hopper); false for an "
          "A/B baseline");
ABSL_FLAG(int, kernel_timeline_steps, 0,
          "bench: record this many extra forward steps per batch as a kernel timeline (CUPTI: each "
          "kernel's start, duration and gap to the one before) and report the last; 0: none");
ABSL_FLAG(int, prefill_gemm_mib, 0,
          "bench: workspace for the prefill GEMM's expanded weight slices, MiB (0: the engine's "
          "default)");
ABSL_FLAG(bool, skip_gpu, false, "bench: only the latency part against --inferd");
ABSL_FLAG(int, clients, 0,
          "bench: concurrent streaming clients against --inferd (0: no latency part)");
ABSL_FLAG(int, requests_per_client, 4, "bench: requests each client sends, one after another");
ABSL_FLAG(int, prompt_tokens, 128, "bench: prompt length of each latency request");
ABSL_DECLARE_FLAG(std::string, store_path);
ABSL_DECLARE_FLAG(std::string, json_out);
ABSL_DECLARE_FLAG(std::string, model_id);
ABSL_DECLARE_FLAG(uint32_t, context_length);
ABSL_DECLARE_FLAG(uint32_t, max_batch_size);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(uint32_t, max_new_tokens);

namespace bitloom::tools {
namespace {

absl::StatusOr<std::vector<int>> ParseInts(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not a positive integer"));
    }
    out.push_back(v);
  }
  return out;
}

int Fail(const absl::Status& status) {
  std::cerr << "bitloom: " << status << "\n";
  return 1;
}

// Loads `artifact` as `model_id` into inferd unless a model of that id is already there.
absl::Status EnsureLoaded(v1::InferenceService::Stub& stub, const std::string& artifact,
                          const std::string& model_id) {
  v1::ListModelsResponse models;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status status = stub.ListModels(&context, {}, &models);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "inferd ListModels: ", CodeName(status.error_code()), ": ", status.error_message()));
    }
  }
  for (const v1::ModelInfo& m : models.models()) {
    if (m.model_id() == model_id) return absl::OkStatus();
  }
  v1::LoadModelRequest request;
  request.set_artifact_name(artifact);
  request.set_model_id(model_id);
  request.set_context_length(absl::GetFlag(FLAGS_context_length));
  request.set_max_batch_size(absl::GetFlag(FLAGS_max_batch_size));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
  v1::LoadModelResponse response;
  const grpc::Status status = stub.LoadModel(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("inferd LoadModel '", artifact,
                                               "': ", CodeName(status.error_code()), ": ",
                                               status.error_message()));
  }
  std::cerr << "bench: loaded " << artifact << " into inferd as " << model_id << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunBench(const std::string& artifact_name, const std::string& inferd_address) {
  const int clients = absl::GetFlag(FLAGS_clients);
  const bool skip_gpu = absl::GetFlag(FLAGS_skip_gpu);
  if (skip_gpu && (inferd_address.empty() || clients <= 0)) {
    std::cerr << "bitloom: bench: --skip_gpu leaves nothing to measure without --inferd=ADDR "
                 "--clients=N\n";
    return 2;
  }
  if (!skip_gpu) {
    if (absl::Status available = CheckGpuBenchAvailable(); !available.ok()) return Fail(available);
  }
  GpuBenchOptions gpu;
  absl::StatusOr<std::vector<int>> batches = ParseInts("batches", absl::GetFlag(FLAGS_batches));
  if (!batches.ok()) return Fail(batches.status());
  absl::StatusOr<std::vector<int>> prefill = ParseInts("prefill", absl::GetFlag(FLAGS_prefill));
  if (!prefill.ok()) return Fail(prefill.status());
  gpu.batches = *batches;
  gpu.prefill_lengths = *prefill;
  gpu.steps = absl::GetFlag(FLAGS_steps);
  gpu.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  gpu.decode_context = absl::GetFlag(FLAGS_decode_context);
  gpu.prefill_repeats = absl::GetFlag(FLAGS_prefill_repeats);
  gpu.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  gpu.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  gpu.kernel_timeline_steps = absl::GetFlag(FLAGS_kernel_timeline_steps);
  gpu.rotating_gemv = absl::GetFlag(FLAGS_rotating_gemv);
  gpu.streamed_gemv = absl::GetFlag(FLAGS_streamed_gemv);
  gpu.tiled_gemv = absl::GetFlag(FLAGS_tiled_gemv);
  gpu.fuse_attention_combine = absl::GetFlag(FLAGS_fuse_attention_combine);
  gpu.offset_terms = absl::GetFlag(FLAGS_offset_terms);
  gpu.vram_fraction = absl::GetFlag(FLAGS_vram_fraction);
  gpu.vram_budget_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_vram_budget_gib) * double(uint64_t{1} << 30));
  gpu.embedding_in_host = absl::GetFlag(FLAGS_embedding_in_host);
  gpu.dependent_launch = absl::GetFlag(FLAGS_dependent_launch);
  gpu.prefill_gemm_bytes = static_cast<uint64_t>(std::max(absl::GetFlag(FLAGS_prefill_gemm_mib), 0)) << 20;
  gpu.seed = absl::GetFlag(FLAGS_seed) + 1;

  nlohmann::json out;
  out["artifact"] = artifact_name;
  if (!skip_gpu) {
    absl::StatusOr<std::unique_ptr<modelstore::ModelStore>> store =
        modelstore::ModelStore::Open(absl::GetFlag(FLAGS_store_path));
    if (!store.ok()) return Fail(store.status());
    absl::StatusOr<std::unique_ptr<modelstore::ArtifactReader>> reader =
        (*store)->OpenReader(artifact_name);
    if (!reader.ok()) return Fail(reader.status());
    const v1::ArtifactManifest& manifest = (*reader)->manifest();
    out["bits_per_weight"] = manifest.bits_per_weight();
    out["head_bits_per_weight"] = manifest.head_bits_per_weight();
    out["file_bytes"] = (*reader)->file_size();
    out["config"] = {{"architecture", manifest.config().architecture()},
                     {"layers", manifest.config().num_layers()},
                     {"hidden", manifest.config().hidden_size()},
                     {"intermediate", manifest.config().intermediate_size()},
                     {"heads", manifest.config().num_attention_heads()},
                     {"kv_heads", manifest.config().num_key_value_heads()},
                     {"vocab", manifest.config().vocab_size()}};
    std::cerr << "bench: measuring " << artifact_name << " on the GPU\n";
    absl::StatusOr<nlohmann::json> result = RunGpuBench(**reader, gpu);
    if (!result.ok()) return Fail(result.status());
    out["gpu"] = *std::move(result);
  } else {
    out["gpu"] = {{"skipped", "--skip_gpu"}};
  }

  if (!inferd_address.empty() && clients > 0) {
    auto channel = grpc::CreateChannel(inferd_address, grpc::InsecureChannelCredentials());
    LatencyBenchOptions latency;
    latency.model_id =
        absl::GetFlag(FLAGS_model_id).empty() ? artifact_name : absl::GetFlag(FLAGS_model_id);
    latency.clients = clients;
    latency.requests_per_client = absl::GetFlag(FLAGS_requests_per_client);
    latency.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
    latency.max_new_tokens = static_cast<int>(absl::GetFlag(FLAGS_max_new_tokens));
    latency.seed = absl::GetFlag(FLAGS_seed) + 1;
    auto stub = v1::InferenceService::NewStub(channel);
    if (absl::Status s = EnsureLoaded(*stub, artifact_name, latency.model_id); !s.ok())
      return Fail(s);
    std::cerr << "bench: " << clients << " streaming clients against " << inferd_address << "\n";
    absl::StatusOr<LatencyReport> report = RunLatencyBench(channel, latency);
    if (!report.ok()) return Fail(report.status());
    out["latency"] = report->ToJson(latency);
    out["latency"]["inferd"] = inferd_address;
  }

  const std::string text = out.dump(2);
  std::cout << text << "\n";
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream file(json_out);
    file << text << "\n";
    if (!file)
      return Fail(absl::UnavailableError(absl::StrCat("cannot write --json_out ", json_out)));
  }
  return 0;
}

}  // namespace bitloom::tools
