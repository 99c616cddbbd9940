// CheckpointBlockRunner: a quant::BlockRunner over a formats::Checkpoint, for every architecture
// engine::ResolveConfig accepts (Llama/SmolLM2, Mistral, Qwen2/2.5/3, Gemma 3).
//
// It is quantd's stand-in until the engine exposes its own per-block forward (EngineBlockRunner):
// the block math here is the engine's DecoderModel::Forward for one block, over the same shared
// kernels (RMSNorm, RoPE, attention, matmul, gated activation), with the pipeline's substituted
// linear weights and without a KV cache (each calibration sequence attends to itself from position
// 0). Norms, biases and embeddings are read from the checkpoint on demand, so nothing but the
// current block's tensors is held in memory. Deterministic; one RunBlock at a time (BlockRunner's
// contract). The checkpoint and the pool are not owned and must outlive the runner.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "block_runner_factory.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/kernels/rope.h"
#include "bitloom/quant/block_runner.h"

namespace bitloom::quantd {

class CheckpointBlockRunner final : public quant::BlockRunner {
 public:
  static absl::StatusOr<std::unique_ptr<CheckpointBlockRunner>> Create(
      const formats::Checkpoint& checkpoint, ThreadPool* pool);

  int num_layers() const override { return cfg_.num_layers; }
  int64_t hidden_size() const override { return cfg_.hidden_size; }
  std::vector<quant::LinearSite> Sites(int layer) const override;
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override;
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override;
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const quant::WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const quant::CaptureFn& capture) const override;

 private:
  CheckpointBlockRunner(const formats::Checkpoint& checkpoint, ThreadPool* pool,
                        engine::ResolvedConfig cfg)
      : checkpoint_(checkpoint), pool_(pool), cfg_(std::move(cfg)) {}

  const formats::Checkpoint& checkpoint_;
  ThreadPool* pool_;
  const engine::ResolvedConfig cfg_;
  kernels::RopeTable global_rope_;
  kernels::RopeTable local_rope_;  // sliding-window layers (Gemma 3's rope_local_theta)
};

// The factory quantd uses until the engine's runner lands.
BlockRunnerFactory CheckpointBlockRunnerFactory();

}  // namespace bitloom::quantd
