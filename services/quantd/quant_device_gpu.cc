// The GPU half of quant_device.h, in builds with the CUDA path (bitloom::quant_cuda).
#include <memory>
#include <optional>
#include <utility>

#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/quant/cuda/gpu_block_runner.h"
#include "bitloom/quant/cuda/gpu_quant_backend.h"
#include "engine_runner_factory.h"
#include "quant_device.h"

namespace bitloom::quantd::internal {
namespace {

// GpuBlockRunner borrows the CPU engine's model (names, weights, embeddings); a job's runner owns
// both.
class OwningGpuRunner final : public quant::BlockRunner {
 public:
  OwningGpuRunner(std::unique_ptr<engine::DecoderModel> model,
                  std::unique_ptr<quant::cuda::GpuBlockRunner> runner)
      : model_(std::move(model)), runner_(std::move(runner)) {}

  int num_layers() const override { return runner_->num_layers(); }
  int64_t hidden_size() const override { return runner_->hidden_size(); }
  std::vector<quant::LinearSite> Sites(int layer) const override { return runner_->Sites(layer); }
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override {
    return runner_->ReadWeight(name, rows, cols);
  }
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override {
    return runner_->Embed(tokens);
  }
  std::optional<quant::OutputLayer> output_layer() const override {
    return runner_->output_layer();
  }
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const quant::WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const quant::CaptureFn& capture) const override {
    return runner_->RunBlock(layer, weights, hidden, sequences, seq_len, capture);
  }
  absl::StatusOr<std::vector<float>> RunBlockSubstituted(
      int layer, const quant::WeightMap& substitutes, absl::Span<const float> hidden,
      int64_t sequences, int64_t seq_len, const quant::CaptureFn& capture) const override {
    return runner_->RunBlockSubstituted(layer, substitutes, hidden, sequences, seq_len, capture);
  }
  absl::StatusOr<std::vector<float>> RunStoredBlocks(int first, int end,
                                                     absl::Span<const float> hidden,
                                                     int64_t sequences,
                                                     int64_t seq_len) const override {
    return runner_->RunStoredBlocks(first, end, hidden, sequences, seq_len);
  }
  bool AcceptsRotatedWeights() const override { return runner_->AcceptsRotatedWeights(); }
  absl::Status RunBlockRotated(int layer, const quant::RotatedWeightMap& substitutes,
                               absl::Span<const float> hidden, int64_t sequences, int64_t seq_len,
                               std::vector<float>* out) const override {
    return runner_->RunBlockRotated(layer, substitutes, hidden, sequences, seq_len, out);
  }
  bool CapturesOnDevice() const override { return runner_->CapturesOnDevice(); }
  absl::Status RunBlockOnDevice(int layer, const quant::WeightMap& weights,
                                absl::Span<const float> hidden, int64_t sequences, int64_t seq_len,
                                const quant::DeviceCaptureFn& capture,
                                std::vector<float>* out) const override {
    return runner_->RunBlockOnDevice(layer, weights, hidden, sequences, seq_len, capture, out);
  }

 private:
  const std::unique_ptr<engine::DecoderModel> model_;  // declared first: destroyed last
  const std::unique_ptr<quant::cuda::GpuBlockRunner> runner_;
};

}  // namespace

bool GpuBuilt() { return true; }

bool GpuVisible() { return quant::cuda::GpuQuantBackend::DevicePresent(); }

absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateGpuBackend(ThreadPool* pool) {
  auto backend = quant::cuda::GpuQuantBackend::Create(pool);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<quant::QuantBackend>(std::move(*backend));
}

BlockRunnerFactory GpuRunnerFactory() {
  BlockRunnerFactory factory;
  // Every model the engine runs: one the GPU forward does not (GpuBlockRunner::Supports, e.g. a
  // head_dim the attention kernels lack) runs its blocks on the CPU engine, its Hessians and LDLQ
  // still on the GPU.
  factory.supports = [](const formats::Checkpoint& checkpoint) -> absl::Status {
    return engine::ResolveConfig(checkpoint.config()).status();
  };
  factory.create = [](const formats::Checkpoint& checkpoint, ThreadPool* pool)
      -> absl::StatusOr<std::unique_ptr<quant::BlockRunner>> {
    BITLOOM_ASSIGN_OR_RETURN(const engine::ResolvedConfig config,
                             engine::ResolveConfig(checkpoint.config()));
    if (absl::Status s = quant::cuda::GpuBlockRunner::Supports(config); !s.ok()) {
      BITLOOM_LOG(WARNING) << "block forwards on the CPU engine: " << s.message();
      return EngineRunnerFactory().create(checkpoint, pool);
    }
    engine::CheckpointWeightSource weights(checkpoint);
    BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::DecoderModel> model,
                             engine::DecoderModel::Load(checkpoint.config(), weights, pool));
    BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<quant::cuda::GpuBlockRunner> runner,
                             quant::cuda::GpuBlockRunner::Create(*model, weights, {.pool = pool}));
    return std::unique_ptr<quant::BlockRunner>(
        new OwningGpuRunner(std::move(model), std::move(runner)));
  };
  return factory;
}

}  // namespace bitloom::quantd::internal
