// GpuSequenceEngine: the GPU engine (engine::GpuDecoderModel) behind the scheduler's SequenceEngine
// (CUDA builds only).
//
// It owns the model, and so its regions of the VRAM pool (freed when the engine is destroyed).
// Slots are the scheduler's admission unit: the model's paged KV cache is sized for `slots`
// full-length sequences, so an admitted sequence always finds its pages. Prefill() with
// Logits::kAll (ScoreTokens) runs the tokens one at a time, since GpuDecoderModel returns the
// last token's logits only; generation prefills in one call. Decode() is one DecodeStep(): a batched
// forward pass (a CUDA graph replay) over up to the model's max_batch sequences, its logits copied
// to the host. DecodeAndSample() (with `sample_on_device`) is the model's DecodeAndSample(): the same
// forward pass, then the on-GPU sampler with each row's parameters and a uniform drawn from the
// row's engine::Sampler, so only the token ids (and the logits of rows that want them) are copied
// back; penalties read the sequence's token counts on the device, which the model keeps for every
// slot (the model must be loaded with enable_sampling and token_count_sequences >= slots). A
// penalised row without counts sends the batch down the host path instead. Without
// `sample_on_device` every step samples on the host (the A/B baseline: same tokens). Page counts
// are the PagedKvCache's own, so a leaked sequence shows in the metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "bitloom/engine/gpu_decoder_model.h"
#include "sequence_engine.h"

namespace bitloom::inferd {

class GpuSequenceEngine : public SequenceEngine {
 public:
  GpuSequenceEngine(std::unique_ptr<engine::GpuDecoderModel> model, int slots, bool sample_on_device);

  int vocab_size() const override { return model_->vocab_size(); }
  int slots() const override { return static_cast<int>(ids_.size()); }
  int max_batch() const override { return model_->options().max_batch; }
  // The model's own prefill chunk: every chunk expands each quantized weight to fp16 once
  // (docs/ENGINE.md), so fewer, longer chunks mean less of that per prompt token.
  int prompt_chunk_tokens() const override { return model_->options().prefill_chunk; }
  absl::StatusOr<int> AddSequence() override;
  void ReleaseSequence(int seq) override;
  int Length(int seq) const override;
  absl::StatusOr<std::vector<float>> Prefill(int seq, absl::Span<const int32_t> tokens,
                                             Logits which) override;
  absl::StatusOr<std::vector<float>> Decode(absl::Span<const int> seqs,
                                            absl::Span<const int32_t> tokens) override;
  absl::StatusOr<SampledStep> DecodeAndSample(absl::Span<const int> seqs, absl::Span<const int32_t> tokens,
                                              absl::Span<const SamplingRow> rows) override;
  int64_t used_pages() const override { return model_->kv_cache().pages_used(); }
  int64_t total_pages() const override { return model_->kv_cache().num_pages(); }

  const engine::GpuDecoderModel& model() const { return *model_; }

 private:
  bool Open(int seq) const;
  // The model's ids of `seqs`; NOT_FOUND for a slot that is not open.
  absl::StatusOr<std::vector<engine::SequenceId>> ModelIds(absl::Span<const int> seqs) const;

  std::unique_ptr<engine::GpuDecoderModel> model_;
  const bool sample_on_device_;
  std::vector<engine::SequenceId> ids_;  // [slots]: the model's sequence of each open slot
  std::vector<bool> open_;               // [slots]
  std::vector<int> free_slots_;          // the last one is taken next
};

}  // namespace bitloom::inferd
