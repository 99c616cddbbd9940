// Tiny random-weight models, one per architecture flavour, and a naive double-precision forward pass
// written straight from the Hugging Face modelling code, for testing the CPU engine without real weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bitloom/engine/weight_source.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::engine::testing {

// Flavours: "llama", "llama3_scaled", "smollm2_tied", "mistral_sliding", "qwen2", "qwen3", "gemma3".
std::vector<std::string> AllFlavours();
v1::ModelConfig SyntheticConfig(const std::string& flavour);
InMemoryWeightSource SyntheticWeights(const v1::ModelConfig& config, uint64_t seed);

// Logits [tokens, vocab] for tokens at positions 0..n-1, computed in double with plain loops.
std::vector<double> NaiveForward(const v1::ModelConfig& config, const InMemoryWeightSource& weights,
                                 const std::vector<int32_t>& tokens);

}  // namespace bitloom::engine::testing
