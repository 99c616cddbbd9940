#include "bitloom/quant/engine_block_runner.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/formats/tensor_names.h"

namespace bitloom::quant {
namespace {

// The tensors of a layer in site order, with the span of LayerLinearWeights each one fills.
struct LinearTensor {
  const char* suffix;
  engine::LinearInput input;
  absl::Span<const float> engine::LayerLinearWeights::*member;
};

constexpr LinearTensor kTensors[] = {
    {"attn.q_proj.weight", engine::LinearInput::kAttention, &engine::LayerLinearWeights::q_proj},
    {"attn.k_proj.weight", engine::LinearInput::kAttention, &engine::LayerLinearWeights::k_proj},
    {"attn.v_proj.weight", engine::LinearInput::kAttention, &engine::LayerLinearWeights::v_proj},
    {"attn.o_proj.weight", engine::LinearInput::kAttentionOutput, &engine::LayerLinearWeights::o_proj},
    {"mlp.gate_proj.weight", engine::LinearInput::kMlp, &engine::LayerLinearWeights::gate_proj},
    {"mlp.up_proj.weight", engine::LinearInput::kMlp, &engine::LayerLinearWeights::up_proj},
    {"mlp.down_proj.weight", engine::LinearInput::kMlpOutput, &engine::LayerLinearWeights::down_proj},
};

// Site names by LinearInput value.
constexpr const char* kSiteNames[] = {"attn_in", "o_in", "mlp_in", "down_in"};

}  // namespace

EngineBlockRunner::EngineBlockRunner(const engine::DecoderModel& model, EngineBlockRunnerOptions options)
    : model_(model),
      num_layers_(options.num_layers > 0 && options.num_layers < model.resolved().num_layers
                      ? options.num_layers
                      : model.resolved().num_layers) {}

std::vector<LinearSite> EngineBlockRunner::Sites(int layer) const {
  const engine::ResolvedConfig& c = model_.resolved();
  const int64_t widths[] = {c.hidden_size, int64_t{c.num_heads} * c.head_dim, c.hidden_size,
                            c.intermediate_size};
  std::vector<LinearSite> sites(4);
  for (int s = 0; s < 4; ++s) {
    sites[s].name = kSiteNames[s];
    sites[s].dim = widths[s];
  }
  for (const LinearTensor& t : kTensors) {
    sites[static_cast<int>(t.input)].tensors.push_back(formats::LayerTensor(layer, t.suffix));
  }
  return sites;
}

absl::StatusOr<std::vector<float>> EngineBlockRunner::ReadWeight(const std::string& name, int64_t* rows,
                                                                 int64_t* cols) const {
  for (int layer = 0; layer < num_layers_; ++layer) {
    const std::string prefix = formats::LayerTensor(layer, "");
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::vector<LinearSite> sites = Sites(layer);
    const engine::LayerLinearWeights own = model_.linear_weights(layer);
    for (const LinearTensor& t : kTensors) {
      if (name != formats::LayerTensor(layer, t.suffix)) continue;
      const absl::Span<const float> w = own.*t.member;
      *cols = sites[static_cast<int>(t.input)].dim;
      *rows = static_cast<int64_t>(w.size()) / *cols;
      return std::vector<float>(w.begin(), w.end());
    }
  }
  return absl::NotFoundError(absl::StrCat("ReadWeight: ", name, " is not a linear weight of blocks 0..",
                                          num_layers_ - 1));
}

absl::StatusOr<std::vector<float>> EngineBlockRunner::Embed(absl::Span<const int32_t> tokens) const {
  return model_.EmbedTokens(tokens);
}

std::optional<OutputLayer> EngineBlockRunner::output_layer() const {
  const engine::ResolvedConfig& c = model_.resolved();
  if (num_layers_ < c.num_layers) return std::nullopt;
  return OutputLayer{.norm_weight = model_.final_norm(),
                     .norm_eps = c.rms_norm_eps,
                     .norm_weight_offset = c.norm_weight_offset,
                     .head = model_.output_head(),
                     .vocab = c.vocab_size};
}

absl::StatusOr<std::vector<float>> EngineBlockRunner::RunBlock(int layer, const WeightMap& weights,
                                                               absl::Span<const float> hidden,
                                                               int64_t sequences, int64_t seq_len,
                                                               const CaptureFn& capture) const {
  return Forward(layer, weights, /*stored_fallback=*/false, hidden, sequences, seq_len, capture);
}

absl::StatusOr<std::vector<float>> EngineBlockRunner::RunBlockSubstituted(
    int layer, const WeightMap& substitutes, absl::Span<const float> hidden, int64_t sequences,
    int64_t seq_len, const CaptureFn& capture) const {
  return Forward(layer, substitutes, /*stored_fallback=*/true, hidden, sequences, seq_len, capture);
}

absl::StatusOr<std::vector<float>> EngineBlockRunner::Forward(int layer, const WeightMap& weights,
                                                              bool stored_fallback,
                                                              absl::Span<const float> hidden,
                                                              int64_t sequences, int64_t seq_len,
                                                              const CaptureFn& capture) const {
  if (layer < 0 || layer >= num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: layer ", layer, " outside [0, ", num_layers_, ")"));
  }
  if (sequences <= 0 || seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: ", sequences, " sequences of ", seq_len));
  }
  const engine::LayerLinearWeights own = model_.linear_weights(layer);
  engine::LayerLinearWeights w;
  for (const LinearTensor& t : kTensors) {
    const std::string name = formats::LayerTensor(layer, t.suffix);
    auto it = weights.find(name);
    if (it == weights.end() && stored_fallback) {
      w.*t.member = own.*t.member;
      continue;
    }
    if (it == weights.end()) return absl::InvalidArgumentError(absl::StrCat("RunBlock: no weight for ", name));
    if (it->second.empty()) return absl::InvalidArgumentError(absl::StrCat("RunBlock: ", name, " is empty"));
    w.*t.member = it->second;
  }
  std::vector<int32_t> positions(sequences * seq_len);
  for (int64_t r = 0; r < sequences * seq_len; ++r) positions[r] = static_cast<int32_t>(r % seq_len);
  std::vector<float> out(hidden.begin(), hidden.end());
  engine::LinearInputCapture see;
  std::vector<LinearSite> sites;
  if (capture) {
    sites = Sites(layer);
    see = [&sites, &capture](engine::LinearInput input, absl::Span<const float> x, int64_t rows,
                             int64_t /*dim*/) { return capture(sites[static_cast<int>(input)], x, rows); };
  }
  if (absl::Status s = model_.ForwardLayer(layer, absl::MakeSpan(out), positions, sequences, w, see); !s.ok()) {
    return s;
  }
  return out;
}

}  // namespace bitloom::quant
