#include "bitloom/engine/rope_tables.h"

#include "bitloom/core/status_macros.h"

namespace bitloom::engine {

absl::StatusOr<ModelRopeTables> BuildRopeTables(const v1::ModelConfig& config, int head_dim) {
  kernels::RopeScaling scaling;
  scaling.type = config.rope_scaling_type();
  scaling.factor = config.rope_scaling_factor() > 0.0f ? config.rope_scaling_factor() : 1.0f;
  if (config.rope_low_freq_factor() > 0.0f) scaling.low_freq_factor = config.rope_low_freq_factor();
  if (config.rope_high_freq_factor() > 0.0f) scaling.high_freq_factor = config.rope_high_freq_factor();
  scaling.original_max_position_embeddings = config.rope_original_max_position_embeddings();
  const double theta = config.rope_theta() > 0.0f ? config.rope_theta() : 10000.0;
  ModelRopeTables tables;
  BITLOOM_ASSIGN_OR_RETURN(tables.global, kernels::RopeInvFreq(head_dim, theta, scaling));
  if (config.rope_local_theta() > 0.0f) {
    // Gemma 3: local layers use their own base and never the long-context scaling of global layers.
    BITLOOM_ASSIGN_OR_RETURN(tables.local, kernels::RopeInvFreq(head_dim, config.rope_local_theta(), {}));
  } else {
    tables.local = tables.global;
  }
  return tables;
}

}  // namespace bitloom::engine
