// CpuSequenceEngine: the CPU engine (engine::DecoderModel) behind the scheduler's SequenceEngine.
//
// The constructor allocates `slots` fp32 KvCaches of `context_length` tokens (the model's whole KV
// reservation; a sequence takes a free one). Decode() runs its sequences one forward pass each, in
// order, so a batch gives bit for bit the logits each sequence gets alone. Pages are an accounting
// unit here (ceil(length / page_tokens) per sequence), matching the GPU's paged cache. The model is
// not owned and must outlive the engine.
#pragma once

#include <cstdint>
#include <vector>

#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/kv_cache.h"
#include "sequence_engine.h"

namespace bitloom::inferd {

class CpuSequenceEngine : public SequenceEngine {
 public:
  CpuSequenceEngine(const engine::DecoderModel* model, int slots, int context_length, int page_tokens);

  int vocab_size() const override { return model_->vocab_size(); }
  int slots() const override { return static_cast<int>(caches_.size()); }
  int max_batch() const override { return slots(); }
  // Short chunks: the CPU forward is slow, and a step's prefill must not stall the decoding
  // sequences for long.
  int prompt_chunk_tokens() const override { return 64; }
  absl::StatusOr<int> AddSequence() override;
  void ReleaseSequence(int seq) override;
  int Length(int seq) const override;
  absl::StatusOr<std::vector<float>> Prefill(int seq, absl::Span<const int32_t> tokens,
                                             Logits which) override;
  absl::StatusOr<std::vector<float>> Decode(absl::Span<const int> seqs,
                                            absl::Span<const int32_t> tokens) override;
  int64_t used_pages() const override;
  int64_t total_pages() const override { return pages_per_slot_ * slots(); }

 private:
  bool Open(int seq) const;

  const engine::DecoderModel* model_;
  const int page_tokens_;
  const int64_t pages_per_slot_;
  std::vector<engine::KvCache> caches_;  // one per slot; the sequence id is the slot
  std::vector<bool> open_;               // [slots]
  std::vector<int> free_slots_;          // the last one is taken next
};

}  // namespace bitloom::inferd
