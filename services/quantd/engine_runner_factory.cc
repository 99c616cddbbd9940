#include "engine_runner_factory.h"

#include <memory>
#include <optional>
#include <utility>

#include "bitloom/core/status_macros.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/quant/engine_block_runner.h"

namespace bitloom::quantd {
namespace {

// EngineBlockRunner borrows its model; a job's runner must own it, so the two travel together.
class OwningEngineRunner final : public quant::BlockRunner {
 public:
  explicit OwningEngineRunner(std::unique_ptr<engine::DecoderModel> model)
      : model_(std::move(model)), runner_(*model_) {}

  int num_layers() const override { return runner_.num_layers(); }
  int64_t hidden_size() const override { return runner_.hidden_size(); }
  std::vector<quant::LinearSite> Sites(int layer) const override { return runner_.Sites(layer); }
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override {
    return runner_.ReadWeight(name, rows, cols);
  }
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override {
    return runner_.Embed(tokens);
  }
  std::optional<quant::OutputLayer> output_layer() const override {
    return runner_.output_layer();
  }
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const quant::WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const quant::CaptureFn& capture) const override {
    return runner_.RunBlock(layer, weights, hidden, sequences, seq_len, capture);
  }
  absl::StatusOr<std::vector<float>> RunBlockSubstituted(
      int layer, const quant::WeightMap& substitutes, absl::Span<const float> hidden,
      int64_t sequences, int64_t seq_len, const quant::CaptureFn& capture) const override {
    return runner_.RunBlockSubstituted(layer, substitutes, hidden, sequences, seq_len, capture);
  }
  absl::StatusOr<std::vector<float>> RunStoredBlocks(int first, int end,
                                                     absl::Span<const float> hidden,
                                                     int64_t sequences,
                                                     int64_t seq_len) const override {
    return runner_.RunStoredBlocks(first, end, hidden, sequences, seq_len);
  }

 private:
  const std::unique_ptr<engine::DecoderModel> model_;
  const quant::EngineBlockRunner runner_;
};

}  // namespace

BlockRunnerFactory EngineRunnerFactory() {
  BlockRunnerFactory factory;
  // The engine's own config check: INVALID_ARGUMENT naming the architecture or field it cannot run.
  factory.supports = [](const formats::Checkpoint& checkpoint) -> absl::Status {
    return engine::ResolveConfig(checkpoint.config()).status();
  };
  factory.create = [](const formats::Checkpoint& checkpoint, ThreadPool* pool)
      -> absl::StatusOr<std::unique_ptr<quant::BlockRunner>> {
    engine::CheckpointWeightSource weights(checkpoint);
    BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::DecoderModel> model,
                             engine::DecoderModel::Load(checkpoint.config(), weights, pool));
    return std::unique_ptr<quant::BlockRunner>(new OwningEngineRunner(std::move(model)));
  };
  return factory;
}

}  // namespace bitloom::quantd
