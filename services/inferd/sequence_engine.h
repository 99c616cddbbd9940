// SequenceEngine: what ModelScheduler needs from a forward-pass engine — sequences with their own KV
// cache, a prompt appended in chunks, and one decode step over a batch of sequences — so that the
// CPU engine (CpuSequenceEngine over engine::DecoderModel) and the GPU engine (GpuSequenceEngine
// over engine::GpuDecoderModel) sit behind the same scheduler, with its queueing, stop strings,
// cancellation and metrics written once.
//
// A generation's decode step is DecodeAndSample(): the engine returns the next token of each
// sequence, drawn with the sequence's own engine::Sampler. The default (the CPU engine's) is
// Decode() then Sampler::Sample() on the host; the GPU engine samples on the device, so only token
// ids cross to the host (and the logits of rows that asked for them, for logprobs). Either way the
// token is the host sampler's for the same logits and seed: the draws come from the sequence's
// generator in the same order, and the penalties count the same ids (the prompt = every token
// Prefill() appended, the output = every token a decode step ran, which is the output so far).
//
// Capacity is decided at load: `slots()` sequences may be open at once, each able to hold
// `context_length` tokens (the scheduler never admits more, so a running sequence never runs out of
// cache). KV usage is reported in pages for the metrics. Not thread-safe: the scheduler's thread is
// the only caller, except for the constructor and destructor.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/sampler.h"

namespace bitloom::inferd {

class SequenceEngine {
 public:
  // Which logits a prefill chunk returns.
  enum class Logits { kAll, kLast, kNone };

  virtual ~SequenceEngine() = default;

  virtual int vocab_size() const = 0;
  // Most sequences open at once.
  virtual int slots() const = 0;
  // Most sequences one Decode() call runs; larger batches are split by the caller.
  virtual int max_batch() const = 0;
  // Prompt tokens a generation's Prefill() should carry at a time: what the engine runs efficiently
  // as one forward pass. The scheduler's generation chunk (scores keep their own, fixed chunk).
  virtual int prompt_chunk_tokens() const = 0;

  // Opens an empty sequence and returns its id. RESOURCE_EXHAUSTED when slots() are open.
  virtual absl::StatusOr<int> AddSequence() = 0;
  // Frees the sequence's cache at once. Unknown ids are ignored.
  virtual void ReleaseSequence(int seq) = 0;
  // Tokens cached for `seq`.
  virtual int Length(int seq) const = 0;

  // Appends `tokens` (>= 1) to `seq` at positions Length(seq).. and returns logits: [tokens, vocab]
  // for kAll, [vocab] for kLast, empty for kNone. The sequence is unchanged on error.
  virtual absl::StatusOr<std::vector<float>> Prefill(int seq, absl::Span<const int32_t> tokens,
                                                     Logits which) = 0;
  // Runs tokens[i] as the next token of seqs[i] (distinct, 1..max_batch() of them) and returns
  // logits [seqs, vocab]. On error the batch's sequences may have grown and are to be released.
  virtual absl::StatusOr<std::vector<float>> Decode(absl::Span<const int> seqs,
                                                    absl::Span<const int32_t> tokens) = 0;

  // One sequence's part of DecodeAndSample().
  struct SamplingRow {
    engine::Sampler* sampler = nullptr;  // the sequence's: its parameters and its generator
    absl::Span<const int32_t> prompt;    // the ids prefilled (penalties)
    absl::Span<const int32_t> output;    // the ids generated so far, this step's token last (penalties)
    bool want_logits = false;            // also return the row's raw logits (logprobs)
  };
  struct SampledStep {
    std::vector<int32_t> tokens;             // [seqs]: the next token of each sequence
    std::vector<std::vector<float>> logits;  // [seqs]: [vocab] where want_logits, else empty
  };
  // Decode(seqs, tokens), then the next token of each sequence by rows[i].sampler (one draw from its
  // generator when its temperature is > 0, as Sampler::Sample). Errors as Decode().
  virtual absl::StatusOr<SampledStep> DecodeAndSample(absl::Span<const int> seqs,
                                                      absl::Span<const int32_t> tokens,
                                                      absl::Span<const SamplingRow> rows);

  // KV pages in use by the open sequences, and in all.
  virtual int64_t used_pages() const = 0;
  virtual int64_t total_pages() const = 0;
};

}  // namespace bitloom::inferd
