// Rotary position embedding (RoPE) in Hugging Face's "rotate half" layout.
//
// A head vector of dimension d is split into halves (x1 = x[0:d/2], x2 = x[d/2:d]); pair i rotates by
// angle position · inv_freq[i]:  x1' = x1·cos − x2·sin,  x2' = x2·cos + x1·sin. GGUF's Llama files store
// Q/K rows permuted for the interleaved layout; the checkpoint readers undo that, so only this layout
// exists here.
//
// The frequency table depends on the model's RoPE base and scaling (none, linear, llama3, yarn) and is
// built once per model by RopeInvFreq(). Angles are formed the way transformers does it (fp32 product of
// fp32 position and fp32 inverse frequency, then cos/sin), because at position p the angle's rounding
// error is ~p·2⁻²⁴ rad and matching it keeps golden-logit differences small.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels {

struct RopeScaling {
  // "" (none), "linear", "llama3" or "yarn".
  std::string type;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;                 // llama3
  float high_freq_factor = 4.0f;                // llama3
  uint32_t original_max_position_embeddings = 0;  // llama3, yarn
  float beta_fast = 32.0f;                      // yarn
  float beta_slow = 1.0f;                       // yarn
};

struct RopeTable {
  std::vector<float> inv_freq;    // [head_dim / 2], radians per position
  float attention_scaling = 1.0f;  // multiplies cos and sin (yarn's "mscale"; 1 otherwise)
};

// INVALID_ARGUMENT for an odd or zero head_dim, a non-positive base, or an unknown scaling type.
absl::StatusOr<RopeTable> RopeInvFreq(int head_dim, double base, const RopeScaling& scaling);

struct RopeParams {
  float* x = nullptr;                // [tokens, heads, head_dim], rotated in place
  const int32_t* positions = nullptr;  // [tokens], >= 0
  const RopeTable* table = nullptr;  // inv_freq.size() == head_dim / 2
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
};

absl::Status RopeF32(const RopeParams& params, ThreadPool* pool);

}  // namespace bitloom::kernels
