// RunGpuBench (bench_gpu.h) over GpuDecoderModel: CUDA builds only.
#include "bench_gpu.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "bench_cublas_prefill.h"
#include "bench_weight_bytes.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/device_pool_memory.h"
#include "bitloom/engine/gpu_decoder_model.h"
#include "bitloom/engine/vram_pool.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/dependent_launch.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/cuda/sampling.h"
#include "kernel_timeline.h"

namespace bitloom::tools {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kCopyBytes = uint64_t{1} << 30;
constexpr int kCopyWarmup = 2;
constexpr int kCopyTimed = 10;

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Device-to-device copy bandwidth, GB/s = 2·bytes / median time (see bench_gpu.h).
absl::StatusOr<double> MeasureCopyBandwidth() {
  void* src = nullptr;
  void* dst = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  absl::Cleanup release = [&] {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
    if (stream != nullptr) cudaStreamDestroy(stream);
    if (src != nullptr) cudaFree(src);
    if (dst != nullptr) cudaFree(dst);
  };
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&src, kCopyBytes));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMalloc(&dst, kCopyBytes));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(src, 1, kCopyBytes, stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int i = 0; i < kCopyWarmup + kCopyTimed; ++i) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, src, kCopyBytes, cudaMemcpyDeviceToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    if (i >= kCopyWarmup) times.push_back(ms * 1e-3);
  }
  return 2.0 * static_cast<double>(kCopyBytes) / Median(times) / 1e9;
}

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, int vocab, int n) {
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& t : out) t = token(rng);
  return out;
}

nlohmann::json StepStats(const std::vector<double>& step_seconds, int batch,
                         double limit_tokens_per_s) {
  std::vector<double> sorted = step_seconds;
  std::sort(sorted.begin(), sorted.end());
  const double median = Median(sorted);
  nlohmann::json j;
  j["median_step_ms"] = 1e3 * median;
  j["p10_step_ms"] = sorted.empty() ? 0.0 : 1e3 * sorted[sorted.size() / 10];
  j["p90_step_ms"] = sorted.empty() ? 0.0 : 1e3 * sorted[sorted.size() * 9 / 10];
  const double tokens_per_s = median > 0 ? batch / median : 0.0;
  j["tokens_per_s"] = tokens_per_s;
  j["fraction_of_limit"] = limit_tokens_per_s > 0 ? tokens_per_s / limit_tokens_per_s : 0.0;
  return j;
}

// `steps` more forward steps of `seqs` under a KernelTimelineRecorder, summarized.
absl::StatusOr<nlohmann::json> RecordTimeline(engine::GpuDecoderModel& model,
                                              const std::vector<engine::SequenceId>& seqs,
                                              const std::vector<int32_t>& tokens, int steps) {
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(model.stream()));
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<KernelTimelineRecorder> recorder,
                           KernelTimelineRecorder::Start());
  for (int i = 0; i < steps; ++i) {
    BITLOOM_RETURN_IF_ERROR(model.DecodeStepOnDevice(seqs, tokens));
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(model.stream()));
  BITLOOM_ASSIGN_OR_RETURN(std::vector<KernelSpan> spans, recorder->Stop());
  return SummarizeTimeline(std::move(spans), steps);
}

// Decode at one batch size: both loops of bench_gpu.h, from sequences of `context` tokens.
absl::StatusOr<nlohmann::json> BenchDecode(engine::GpuDecoderModel& model,
                                           const GpuBenchOptions& options, int batch,
                                           double limit_per_sequence, std::mt19937_64& rng) {
  const int vocab = model.vocab_size();
  std::vector<engine::SequenceId> seqs;
  absl::Cleanup release = [&] {
    for (engine::SequenceId s : seqs) (void)model.Release(s);
  };
  for (int b = 0; b < batch; ++b) {
    BITLOOM_ASSIGN_OR_RETURN(engine::SequenceId seq, model.AddSequence());
    seqs.push_back(seq);
    BITLOOM_RETURN_IF_ERROR(
        model.Prefill(seq, RandomTokens(rng, vocab, options.decode_context)).status());
  }
  std::vector<int32_t> tokens = RandomTokens(rng, vocab, batch);
  const double limit = limit_per_sequence * batch;

  std::vector<double> forward;
  for (int i = 0; i < options.warmup_steps + options.steps; ++i) {
    const Clock::time_point t0 = Clock::now();
    BITLOOM_RETURN_IF_ERROR(model.DecodeStepOnDevice(seqs, tokens));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(model.stream()));
    if (i >= options.warmup_steps) forward.push_back(Seconds(Clock::now() - t0));
  }

  nlohmann::json j;
  j["batch"] = batch;
  j["context_start"] = options.decode_context;
  j["steps"] = options.steps;
  j["limit_tokens_per_s"] = limit;
  j["forward"] = StepStats(forward, batch, limit);
  if (options.kernel_timeline_steps > 0) {
    BITLOOM_ASSIGN_OR_RETURN(j["kernel_timeline"],
                             RecordTimeline(model, seqs, tokens, options.kernel_timeline_steps));
  }

  // The serving step: forward + greedy sampling on the GPU, the sampled tokens fed back.
  std::vector<kernels::cuda::SamplingRowParams> rows(static_cast<size_t>(batch));
  std::vector<double> uniforms(static_cast<size_t>(batch), 0.0);
  std::vector<double> sampled;
  absl::Status sample_status;
  for (int i = 0; i < options.warmup_steps + options.steps && sample_status.ok(); ++i) {
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<std::vector<int32_t>> next = model.DecodeAndSample(seqs, tokens, rows, uniforms);
    if (!next.ok()) {
      sample_status = next.status();
      break;
    }
    if (i >= options.warmup_steps) sampled.push_back(Seconds(Clock::now() - t0));
    tokens = *std::move(next);
  }
  if (sample_status.ok()) {
    j["with_sampling"] = StepStats(sampled, batch, limit);
  } else {
    j["with_sampling"] = {{"error", sample_status.ToString()}};
  }
  j["context_end"] = model.Length(seqs.front());
  return j;
}

absl::StatusOr<nlohmann::json> BenchPrefill(engine::GpuDecoderModel& model,
                                            const GpuBenchOptions& options, int length,
                                            std::mt19937_64& rng) {
  std::vector<double> times;
  bool finite = true;
  double rms = 0;
  for (int i = 0; i < 1 + options.prefill_repeats; ++i) {
    BITLOOM_ASSIGN_OR_RETURN(engine::SequenceId seq, model.AddSequence());
    absl::Cleanup release = [&] { (void)model.Release(seq); };
    const std::vector<int32_t> prompt = RandomTokens(rng, model.vocab_size(), length);
    const Clock::time_point t0 = Clock::now();
    BITLOOM_ASSIGN_OR_RETURN(const std::vector<float> logits, model.Prefill(seq, prompt));
    if (i >= 1) times.push_back(Seconds(Clock::now() - t0));  // the first is the warm-up
    // A sanity check of the numbers, not a timing: random weights must still give finite logits.
    double squares = 0;
    for (float v : logits) {
      if (!std::isfinite(v)) finite = false;
      squares += static_cast<double>(v) * v;
    }
    rms = logits.empty() ? 0.0 : std::sqrt(squares / static_cast<double>(logits.size()));
  }
  const double median = Median(times);
  nlohmann::json j;
  j["tokens"] = length;
  j["repeats"] = options.prefill_repeats;
  j["median_ms"] = 1e3 * median;
  j["tokens_per_s"] = median > 0 ? length / median : 0.0;
  j["last_logits_finite"] = finite;
  j["last_logits_rms"] = rms;
  return j;
}

int PagesFor(int tokens, int page_size) { return (tokens + page_size - 1) / page_size; }

}  // namespace

absl::Status CheckGpuBenchAvailable() {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    return absl::FailedPreconditionError("bitloom bench needs a GPU: no CUDA device is visible");
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> RunGpuBench(const modelstore::ArtifactReader& reader,
                                           const GpuBenchOptions& options) {
  if (options.batches.empty() || options.steps <= 0 || options.warmup_steps < 0 ||
      options.decode_context <= 0 || options.prefill_repeats <= 0) {
    return absl::InvalidArgumentError(
        "bench: batches, steps, decode_context and prefill_repeats must be positive");
  }
  if (options.kernel_timeline_steps < 0 || options.kernel_timeline_steps > kMaxTimelineSteps) {
    return absl::InvalidArgumentError(absl::StrCat("bench: kernel_timeline_steps ",
                                                   options.kernel_timeline_steps,
                                                   " outside [0, ", kMaxTimelineSteps, "]"));
  }
  BITLOOM_RETURN_IF_ERROR(CheckGpuBenchAvailable());
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  cudaDeviceProp prop{};
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));

  nlohmann::json out;
  out["device"] = {{"name", prop.name},
                   {"compute_capability", absl::StrCat(prop.major, ".", prop.minor)},
                   {"sms", prop.multiProcessorCount},
                   {"memory_bytes", prop.totalGlobalMem}};

  BITLOOM_ASSIGN_OR_RETURN(const double bandwidth_gbps, MeasureCopyBandwidth());
  out["copy_bandwidth_gbps"] = bandwidth_gbps;
  out["copy_convention"] =
      "cudaMemcpyAsync D2D of 1 GiB, GB/s = 2*bytes/time (read + write), median of 10 after 2 "
      "warm-up, 1 GB = 1e9 B";

  const DecodeWeightBytes bytes = DecodeBytesPerToken(reader.manifest());
  const double limit_per_sequence = bandwidth_gbps * 1e9 / static_cast<double>(bytes.total());
  out["bytes_per_token"] = {{"total", bytes.total()},
                            {"decoder_linears", bytes.decoder_linears},
                            {"head", bytes.head},
                            {"norms_and_other", bytes.norms_and_other},
                            {"embedding_row", bytes.embedding_row}};
  out["limit_tokens_per_s_batch1"] = limit_per_sequence;

  // The prefill yardstick, before the pool takes the memory.
  BITLOOM_ASSIGN_OR_RETURN(const engine::ResolvedConfig resolved, engine::ResolveConfig(reader.manifest().config()));
  std::vector<nlohmann::json> cublas_prefill;
  for (int length : options.prefill_lengths) {
    BITLOOM_ASSIGN_OR_RETURN(nlohmann::json row, MeasureCublasPrefill(resolved, length, options.prefill_repeats));
    cublas_prefill.push_back(std::move(row));
  }

  // Sequences live one batch (or one prompt) at a time; the cache holds the largest of them.
  const int max_batch = *std::max_element(options.batches.begin(), options.batches.end());
  const int max_prefill =
      options.prefill_lengths.empty()
          ? 0
          : *std::max_element(options.prefill_lengths.begin(), options.prefill_lengths.end());
  const int decode_len = options.decode_context + 2 * (options.warmup_steps + options.steps) +
                         options.kernel_timeline_steps + 1;
  kernels::cuda::SetDependentLaunch(options.dependent_launch);
  kernels::cuda::SetStreamedGemv(options.streamed_gemv);
  engine::GpuModelOptions model_options;
  model_options.model_id = "bench";
  model_options.max_batch = max_batch;
  model_options.max_seq_len = std::max(decode_len, max_prefill + 1);
  model_options.prefill_chunk = options.prefill_chunk;
  model_options.use_cuda_graphs = options.cuda_graphs;
  model_options.rotating_gemv = options.rotating_gemv;
  model_options.tiled_gemv = options.tiled_gemv;
  model_options.fuse_attention_combine = options.fuse_attention_combine;
  model_options.offset_terms = options.offset_terms;
  model_options.embedding_in_host = options.embedding_in_host;
  if (options.prefill_gemm_bytes > 0) model_options.prefill_gemm_bytes = options.prefill_gemm_bytes;
  model_options.kv_pages = std::max(max_batch * PagesFor(decode_len, model_options.page_size),
                                    PagesFor(max_prefill, model_options.page_size)) +
                           max_batch;
  out["model_options"] = {{"max_batch", model_options.max_batch},
                          {"max_seq_len", model_options.max_seq_len},
                          {"kv_pages", model_options.kv_pages},
                          {"page_size", model_options.page_size},
                          {"prefill_chunk", model_options.prefill_chunk},
                          {"cuda_graphs", model_options.use_cuda_graphs},
                          {"rotating_gemv", model_options.rotating_gemv},
                          {"embedding_in_host", model_options.embedding_in_host},
                          {"dependent_launch", kernels::cuda::DependentLaunchEnabled()},
                          {"streamed_gemv", kernels::cuda::StreamedGemvEnabled()},
                          {"tiled_gemv", model_options.tiled_gemv},
                          {"fuse_attention_combine", model_options.fuse_attention_combine},
                          {"offset_terms", model_options.offset_terms},
                          {"prefill_gemm_bytes", model_options.prefill_gemm_bytes}};

  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::PoolMemory> memory,
                           engine::AllocateDevicePoolMemory(
                               options.vram_budget_bytes > 0
                                   ? engine::VramBudget{.bytes = options.vram_budget_bytes}
                                   : engine::VramBudget{.fraction_of_free = options.vram_fraction}));
  engine::VramPool pool(std::move(memory));
  const Clock::time_point load_start = Clock::now();
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::GpuDecoderModel> model,
                           engine::GpuDecoderModel::Load(reader, &pool, model_options));
  out["load_seconds"] = Seconds(Clock::now() - load_start);
  out["tiled_bytes"] = model->tiled_bytes();
  out["pool"] = {{"capacity_bytes", pool.capacity()},
                 {"weights_bytes", model->weights_bytes()},
                 {"kv_bytes", model->kv_bytes()},
                 {"workspace_bytes", model->workspace_bytes()},
                 {"host_bytes", model->host_bytes()}};

  std::mt19937_64 rng(options.seed);
  nlohmann::json decode = nlohmann::json::array();
  for (int batch : options.batches) {
    BITLOOM_ASSIGN_OR_RETURN(nlohmann::json row,
                             BenchDecode(*model, options, batch, limit_per_sequence, rng));
    decode.push_back(std::move(row));
  }
  out["decode"] = std::move(decode);
  nlohmann::json prefill = nlohmann::json::array();
  for (size_t i = 0; i < options.prefill_lengths.size(); ++i) {
    BITLOOM_ASSIGN_OR_RETURN(nlohmann::json row, BenchPrefill(*model, options, options.prefill_lengths[i], rng));
    const double baseline = cublas_prefill[i]["tokens_per_s"].get<double>();
    row["fraction_of_cublas_fp16"] = baseline > 0 ? row["tokens_per_s"].get<double>() / baseline : 0.0;
    row["cublas_fp16_gemms"] = std::move(cublas_prefill[i]);
    prefill.push_back(std::move(row));
  }
  out["prefill"] = std::move(prefill);
  return out;
}

}  // namespace bitloom::tools
