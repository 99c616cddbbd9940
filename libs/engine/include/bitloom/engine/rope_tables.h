// The RoPE tables of a model: how a ModelConfig's rope fields (theta, scaling type and factors,
// Gemma 3's separate local base) become the inverse frequencies every forward pass uses. One
// definition shared by the CPU decoder, the GPU weight plan and quantd's GPU block runner, so the
// three rotate identically.
#pragma once

#include "absl/status/statusor.h"
#include "bitloom/kernels/rope.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::engine {

struct ModelRopeTables {
  kernels::RopeTable global;  // full-attention layers (and every layer without a local base)
  kernels::RopeTable local;   // sliding-window layers: rope_local_theta, never long-context scaling
};

// INVALID_ARGUMENT (from kernels::RopeInvFreq) for an odd head_dim or unknown scaling type.
absl::StatusOr<ModelRopeTables> BuildRopeTables(const v1::ModelConfig& config, int head_dim);

}  // namespace bitloom::engine
