// Synthetic artifacts: random weights in the real shapes of a model, written straight to a Bitloom
// artifact at a chosen average bit width with no source model and no calibration — what `bitloom
// synth` makes so that `bitloom bench` can measure Llama-3-8B/70B-sized serving speed anywhere.
//
// The artifact is valid in every respect the reader and the engines check: a llama ModelConfig
// with the real hyperparameters, a byte-level tokenizer with the model's vocabulary size, every
// decoder linear weight as CODEC_HADAMARD_SCALAR (random codes, random fp16 group scales, rotation
// params of the site's seeded rotation, shared by the tensors of one input site as quantd writes
// them), the output head at its own K (or fp16), the embedding in fp16 and the norms as f32 ones.
// Scales are chosen so that each linear layer roughly preserves the RMS of its input
// (s = 1 / (√in · rms of the code levels)), which keeps activations finite through 80 layers; the
// outputs are meaningless text, the speed is real.
//
// Bit widths: the target is the average *stored* bits per weight over the decoder's linear weights
// (docs/QUANTIZATION.md section 4: codes + scales + padding, so K = 2 at group 128 stores 2.125).
// Each tensor gets one of the two adjacent widths K_lo, K_lo + 1 whose stored averages bracket the
// target, chosen in file order by error diffusion (a tensor takes the wider code when that brings
// the running average closer to the target), so the wide tensors are spread evenly over layers and
// roles and the average lands within half a tensor's share of the target (≤ 0.005 bits for the
// real shapes).
//
// Writing is streamed: each tensor's blob is produced in fixed-size chunks on the ThreadPool, a
// bounded window of chunks ahead of the writer, and appended in order, so memory stays at a few
// chunks per thread whatever the model's size. Every byte is a pure function of (seed, tensor,
// byte offset) — a counter-based SplitMix64 — so the file is the same for any thread count or
// chunk size. Thread-safe: the functions keep no state.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::engine {

// The shapes SyntheticModelConfig knows, for messages and --help.
inline constexpr char kSyntheticShapeNames[] = "llama3-8b, llama3-70b, smollm2-135m, tiny";

// The config of a named shape: "llama3-8b" and "llama3-70b" (Llama 3.1: vocab 128256, rope theta
// 500000 with llama3 scaling, 8 KV heads, untied head), "smollm2-135m" (SmolLM2-135M, tied
// embeddings) or "tiny" (2 layers with widths that are not multiples of the codec's blocks and
// groups, for tests). INVALID_ARGUMENT naming the shape otherwise.
absl::StatusOr<v1::ModelConfig> SyntheticModelConfig(absl::string_view shape);

struct SyntheticArtifactOptions {
  // Target average stored bits per weight of the decoder's linear weights, from the cheapest K = 1
  // tensor's up to K = 8's (about 1.125 .. 8.125 at group 128).
  double bits_per_weight = 4.0;
  // The output head's code width K (1..8), or 16 for fp16. Ignored for tied embeddings.
  int head_bits = 6;
  // Columns per fp16 scale, a multiple of 32.
  int group_size = 128;
  // Decides every random byte and the rotation seeds.
  uint64_t seed = 0;
  // Blob bytes produced per task; the writer gets the blob in pieces of this size.
  uint64_t chunk_bytes = uint64_t{16} << 20;
  // The manifest's source.location (the shape's name, say).
  std::string source_location = "synthetic";
  // Called on the calling thread after each tensor: (tensors written, total tensors, bytes
  // written).
  std::function<void(int, int, uint64_t)> on_progress;
};

// One tensor of a synthetic artifact, in file order.
struct SyntheticTensor {
  v1::TensorEntry entry;  // name, codec, shape, bits_per_weight (K or 16/32), group_size, params
  uint64_t bytes = 0;     // blob size
  bool decoder_linear = false;  // counted in the average bits per weight
};

struct SyntheticArtifactPlan {
  v1::ModelConfig config;
  std::vector<SyntheticTensor> tensors;
  double bits_per_weight = 0;       // achieved average over the decoder linears (stored bits)
  double head_bits_per_weight = 0;  // stored bits of the head (16 when fp16 or tied)
  uint64_t decoder_linear_bytes = 0;
  uint64_t total_bytes = 0;  // Σ blob bytes (the file adds 4096-byte alignment and the manifest)
};

// Every tensor's entry and size, without producing any bytes (cheap even for 70B).
// INVALID_ARGUMENT naming the option for a target outside the reachable range, a bad head_bits or
// group_size, or a config the engine cannot resolve.
absl::StatusOr<SyntheticArtifactPlan> PlanSyntheticArtifact(
    const v1::ModelConfig& config, const SyntheticArtifactOptions& options);

// Ids of the synthetic tokenizer's special tokens.
struct SyntheticSpecialTokens {
  uint32_t bos = 0;
  uint32_t eos = 0;
  uint32_t eot = 0;  // end of turn
};

// A byte-level BPE tokenizer (GGUF "gpt2" form, pre-tokenizer "llama-bpe", no merges) of exactly
// `vocab_size` tokens: ids 0..255 the bytes, then filler tokens of 2 or 3 alphanumeric characters
// (whole-word matches only, since there are no merges), then the last min(256, vocab − 256) ids
// special (control) tokens: BOS, EOS and end-of-turn are the first, second and tenth of them — for
// a 128256 vocabulary the Llama 3 ids 128000, 128001 and 128009. Sampled ids always decode to text.
// INVALID_ARGUMENT when vocab_size is below 266 or above what the fillers can name (242 684).
absl::StatusOr<v1::TokenizerSpec> SyntheticTokenizer(uint32_t vocab_size,
                                                     SyntheticSpecialTokens* special);

// Plans, generates and writes the artifact through `writer` (tensors, then Finish() with the
// manifest: name, config, tokenizer, bits). `pool` may be null (one thread). On error the writer
// is aborted. Returns the plan that was written.
absl::StatusOr<SyntheticArtifactPlan> WriteSyntheticArtifact(
    const v1::ModelConfig& config, const SyntheticArtifactOptions& options,
    modelstore::ArtifactWriter& writer, ThreadPool* pool);

// Fills `out` with bytes [offset, offset + out.size()) of `tensor`'s blob as the writer would write
// them for `seed`. Exposed for the tests (chunk independence).
absl::Status FillSyntheticBlob(const SyntheticTensor& tensor, uint64_t seed, uint64_t offset,
                               absl::Span<uint8_t> out);

}  // namespace bitloom::engine
