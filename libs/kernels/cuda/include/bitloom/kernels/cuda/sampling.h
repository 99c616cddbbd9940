// Next-token sampling on the GPU, one row of fp32 logits per sequence of a batch, with the CPU
// sampler's semantics (engine/sampler.h; the pipeline below is its, step for step):
//  1. penalties on the raw logits: repetition (a token seen in the prompt or the output: a positive
//     logit / r, a negative one · r), then presence and frequency (output tokens only:
//     logit −= presence + frequency · count);
//  2. temperature == 0: greedy, the argmax with the lowest id on ties; nothing else applies;
//  3. p = softmax(logits / temperature) in double;
//  4-6. top_k, then top_p (relative to the top-k mass), then min_p (p ≥ min_p · max p), over the
//     order "descending probability, lower id first"; at least one token survives;
//  7. the draw: walking the survivors in id order with their renormalised probabilities, the first
//     id whose running sum exceeds u (the last nonzero one if u lands in the rounding gap).
// The uniform variate u ∈ [0, 1) of each row is an input, produced on the host from the sequence's
// generator exactly as Sampler::Sample draws it ((mt19937_64() >> 11) · 2⁻⁵³), so for the same u the
// GPU picks the CPU's token. The sums that decide steps 5 and 7 are formed in a different order than
// on the CPU (in double), so a different token is possible only when u or the top_p target falls
// within ~1e-15 of a boundary. The order of step 4 is taken on the penalised fp32 logit (ties to the
// lower id), which equals the CPU's order on probabilities except between distinct logits within
// ~1e-9·temperature of zero, whose exp() rounds to the same double. NaN logits are not supported.
//
// Per-row parameters live on the device (SamplingRowParams, one per row) so one captured CUDA graph
// serves any mix of requests; counts for the penalties are dense per-row arrays. The work needs a
// caller-owned device workspace of SamplingWorkspaceBytes(batch, vocab) bytes (scratch logits, sort
// keys, the sorted probabilities and per-chunk partial sums; about 36·batch·vocab bytes plus the
// radix sort's temporary storage). greedy_only (host-side, known when the batch is built) skips
// everything after the argmax.
//
// Ownership: the caller owns every device buffer. The launcher is asynchronous on `stream`,
// allocates nothing, never synchronises and never logs; it is thread-safe. Its launch sequence
// depends only on (batch, vocab, greedy_only), so it can be captured in a CUDA graph. Plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace bitloom::kernels::cuda {

// One row's sampling parameters, with GenerationParams' conventions ("0 means off"). 32 bytes.
struct SamplingRowParams {
  float temperature = 0.0f;         // 0: greedy
  int32_t top_k = 0;                // <= 0: off; clamped to vocab
  float top_p = 0.0f;               // 0 or >= 1: off
  float min_p = 0.0f;               // <= 0: off
  float repetition_penalty = 0.0f;  // 0 or 1: off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t reserved = 0;
};
static_assert(sizeof(SamplingRowParams) == 32);

struct SamplingParams {
  const float* logits = nullptr;           // device [batch, logits_stride] fp32
  int64_t logits_stride = 0;               // elements, >= vocab
  const SamplingRowParams* rows = nullptr;  // device [batch]
  const int32_t* prompt_counts = nullptr;  // device [batch, vocab]: occurrences in the prompt, or null
  const int32_t* output_counts = nullptr;  // device [batch, vocab]: occurrences in the output, or null
  const double* uniforms = nullptr;        // device [batch], u ∈ [0, 1); may be null if greedy_only
  int32_t* tokens = nullptr;               // device [batch]: the sampled ids
  int batch = 0;                           // 1..kMaxSamplingBatch
  int64_t vocab = 0;                       // 1..kMaxSamplingVocab
  bool greedy_only = false;                // every row has temperature 0: only steps 1-2 run
  void* workspace = nullptr;               // device, SamplingWorkspaceBytes(batch, vocab) bytes
  size_t workspace_bytes = 0;
};

inline constexpr int kMaxSamplingBatch = 1024;
inline constexpr int64_t kMaxSamplingVocab = int64_t{1} << 22;

// Bytes of device workspace LaunchSampling needs for this shape (256-byte aligned sections).
// INVALID_ARGUMENT outside the limits above; INTERNAL if the radix sort cannot size its storage.
absl::StatusOr<size_t> SamplingWorkspaceBytes(int batch, int64_t vocab);

// tokens[b] for b < batch. INVALID_ARGUMENT for a bad shape, a null required pointer or a workspace
// smaller than SamplingWorkspaceBytes; INTERNAL for a CUDA launch error. Row parameters are device
// data and are not validated here (GenerationParams::Validate on the host is the check).
absl::Status LaunchSampling(const SamplingParams& params, cudaStream_t stream);

}  // namespace bitloom::kernels::cuda
