// The GPU part of `bitloom bench`: one artifact in a GpuDecoderModel on device 0, measured against
// the memory-bandwidth limit of decoding.
//
//   copy bandwidth   cudaMemcpyAsync device-to-device of 1 GiB, GB/s = 2·bytes/time (read + write),
//                    median of 10 after 2 warm-up copies (the convention of bench/gpu_gemv_bench)
//   bytes per token  DecodeBytesPerToken (bench_weight_bytes.h): the weights one decode step reads
//   limit            batch · bandwidth / bytes per token tokens/s: every step reads the weights
//   once decode           per batch: `batch` sequences prefilled with `decode_context` random
//   tokens, then
//                    `warmup_steps` and `steps` steps, each timed from launch to its stream's end;
//                    the median step gives tokens/s = batch / step time and the fraction of the
//                    limit. Two loops: the forward alone (DecodeStepOnDevice, logits left on the
//                    device) and the serving step (DecodeAndSample, greedy, its tokens fed back).
//   prefill          per length: one warm-up prompt, then `prefill_repeats` fresh sequences; median
//                    time of Prefill() of that many random tokens, in chunks of `prefill_chunk`;
//                    its last logits are checked finite and their RMS reported (a sanity check of
//                    the numbers on random weights, not a quality measure); next to it the cuBLAS
//                    fp16 GEMMs of the same shapes and length (bench_cublas_prefill.h) and the
//                    fraction of their tokens/s reached.
//
// Built only with CUDA (bench_gpu.cc); a CPU build links bench_gpu_unavailable.cc, where both
// functions are FAILED_PRECONDITION saying that a CUDA build and a GPU are needed.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {

inline constexpr int kMaxTimelineSteps = 64;

struct GpuBenchOptions {
  std::vector<int> batches = {1, 4, 16};
  std::vector<int> prefill_lengths = {512, 2048};
  int decode_context = 512;  // tokens in each sequence before decode is timed
  int warmup_steps = 8;
  int steps = 64;  // timed decode steps per batch and loop
  int prefill_repeats = 3;
  int prefill_chunk = 256;     // GpuModelOptions::prefill_chunk
  bool cuda_graphs = true;     // GpuModelOptions::use_cuda_graphs
  bool rotating_gemv = true;   // GpuModelOptions::rotating_gemv
  bool streamed_gemv = false;  // kernels::cuda::SetStreamedGemv
  bool tiled_gemv = true;      // GpuModelOptions::tiled_gemv
  bool fuse_attention_combine = true;  // GpuModelOptions::fuse_attention_combine
  bool offset_terms = true;            // GpuModelOptions::offset_terms
  double vram_fraction = 0.9;  // of the free device memory, for the pool
  uint64_t vram_budget_bytes = 0;  // when > 0, the pool is exactly this (instead of the fraction)
  bool embedding_in_host = false;  // GpuModelOptions::embedding_in_host
  bool dependent_launch = true;    // kernels::cuda::SetDependentLaunch, for A/B runs
  uint64_t prefill_gemm_bytes = 0;  // GpuModelOptions::prefill_gemm_bytes when > 0
  // When > 0, after the timed forward steps of each batch, this many more are recorded as a
  // kernel timeline (kernel_timeline.h) and the last is reported; at most kMaxTimelineSteps.
  int kernel_timeline_steps = 0;
  uint64_t seed = 1;           // random token ids
};

// OK when this build has the GPU engine and a CUDA device is visible; FAILED_PRECONDITION saying
// what is missing otherwise.
absl::Status CheckGpuBenchAvailable();

// The JSON report of everything above (see bench_command.h for its fields).
absl::StatusOr<nlohmann::json> RunGpuBench(const modelstore::ArtifactReader& reader,
                                           const GpuBenchOptions& options);

}  // namespace bitloom::tools
