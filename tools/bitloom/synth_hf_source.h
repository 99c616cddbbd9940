// A synthetic *unquantized* source model: random weights in a real model's shape written as a
// Hugging Face directory (config.json, tokenizer.json, one model.safetensors of F16 tensors), what
// `bitloom synth DIR --format=hf_fp16` makes so that quantd can convert a Llama-3-8B-shaped model
// end to end anywhere (issue 4's conversion-time target) without downloading one.
//
// Llama-family configs only (the shapes of engine/synthetic_model_artifact.h: llama3-8b,
// llama3-70b, smollm2-135m, tiny). Weights: each linear's entries uniform with variance 1/in
// (the scale that keeps activations finite through the blocks), norms 1, embeddings uniform in
// [-1, 1]; every value is a pure function of (seed, tensor, index) (SplitMix64), so the files are the
// same for any thread count. The tokenizer is a BPE over vocab_size made-up single tokens and no
// merges: valid for the readers and for random-token calibration, meaningless as text. Writing is
// streamed in chunks generated on the pool; memory stays at a few chunks. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::tools {

struct SyntheticHfSummary {
  int tensors = 0;
  uint64_t safetensors_bytes = 0;
};

// Writes `dir` (created; existing files of the three names are replaced). INVALID_ARGUMENT for a
// config that is not a llama; INTERNAL for an I/O error. `on_progress(bytes written, total)` is
// called on the calling thread after each chunk.
absl::StatusOr<SyntheticHfSummary> WriteSyntheticHfSource(
    const v1::ModelConfig& config, const std::string& dir, uint64_t seed, ThreadPool* pool,
    const std::function<void(uint64_t, uint64_t)>& on_progress = {});

}  // namespace bitloom::tools
