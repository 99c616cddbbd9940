// EngineBlockRunner: the BlockRunner of the CPU engine, so QuantizationPipeline can quantize any
// model engine::DecoderModel runs (Llama, Mistral, Qwen2/3, Gemma 3).
//
// Every call goes to DecoderModel's per-layer API (EmbedTokens, ForwardLayer), the same code as its
// Forward(), so the blocks the quantizer measures are exactly the blocks inference runs. Each block
// has four input sites, in this order (the order fixes the rotation seeds, see
// QuantizationPipeline::SiteSeed):
//
//   0 "attn_in"  (hidden)        q_proj, k_proj, v_proj
//   1 "o_in"     (heads·head_dim) o_proj
//   2 "mlp_in"   (hidden)        gate_proj, up_proj
//   3 "down_in"  (intermediate)  down_proj
//
// Tensor names are the internal names of bitloom/formats/tensor_names.h ("layers.3.attn.q_proj.weight").
// The runner borrows the model, which must outlive it. Calls are const and may run concurrently (the
// model is immutable), though the pipeline makes one at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/quant/block_runner.h"

namespace bitloom::quant {

struct EngineBlockRunnerOptions {
  // Quantize only the first `num_layers` blocks (0: all of them). For tests and experiments: an
  // artifact made this way keeps the other blocks' weights in whatever form the caller writes them.
  int num_layers = 0;
};

class EngineBlockRunner : public BlockRunner {
 public:
  explicit EngineBlockRunner(const engine::DecoderModel& model, EngineBlockRunnerOptions options = {});

  int num_layers() const override { return num_layers_; }
  int64_t hidden_size() const override { return model_.resolved().hidden_size; }
  std::vector<LinearSite> Sites(int layer) const override;
  // NOT_FOUND for a name that is not a linear weight of a block this runner covers.
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override;
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override;
  // The model's final norm and head; nullopt when the runner covers only the first blocks.
  std::optional<OutputLayer> output_layer() const override;
  // Positions run 0..seq_len-1 in every sequence. INVALID_ARGUMENT when `weights` lacks a tensor of
  // Sites(layer) or has one of the wrong size.
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const CaptureFn& capture) const override;
  // The model's own weights for what `substitutes` lacks, read in place (no copy).
  absl::StatusOr<std::vector<float>> RunBlockSubstituted(int layer, const WeightMap& substitutes,
                                                         absl::Span<const float> hidden,
                                                         int64_t sequences, int64_t seq_len,
                                                         const CaptureFn& capture) const override;

 private:
  // RunBlock; with `stored_fallback`, a tensor missing from `weights` is the model's own.
  absl::StatusOr<std::vector<float>> Forward(int layer, const WeightMap& weights,
                                             bool stored_fallback, absl::Span<const float> hidden,
                                             int64_t sequences, int64_t seq_len,
                                             const CaptureFn& capture) const;

  const engine::DecoderModel& model_;
  int num_layers_;
};

}  // namespace bitloom::quant
