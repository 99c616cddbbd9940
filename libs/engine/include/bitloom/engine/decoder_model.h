// DecoderModel: the CPU reference forward pass of Bitloom's decoder-only transformers.
//
// One class covers every supported family, because they differ only in switches resolved once at load
// time (ResolvedConfig below): Llama 1/2/3/3.1/3.2 and SmolLM2 ("llama", RoPE scaling none/linear/llama3),
// Mistral (optionally sliding-window), Qwen2/2.5 (Q/K/V bias), Qwen3 (per-head Q/K RMSNorm), and Gemma 3
// (GeGLU, Q/K norm, four norms per block applied as x·(1+w), embeddings scaled by √hidden, interleaved
// sliding-window and global layers with their own RoPE bases, query_pre_attn_scalar, soft-capping).
// docs/ENGINE.md gives the per-architecture block diagram and the numerics.
//
// Weights are fp32 copies owned by the model, so it does not depend on how they were stored; all
// accumulation is fp32 (norms and softmax normalisers in double). The model is immutable after Load():
// Forward() may run concurrently on different KvCaches. The ThreadPool (may be null: one thread) is the
// caller's and must outlive the model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/kv_cache.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/kernels/activations.h"
#include "bitloom/kernels/rope.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::engine {

// The model's config with every default and family rule applied; what Forward() actually runs.
struct ResolvedConfig {
  std::string architecture;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float norm_weight_offset = 0.0f;   // 1 for Gemma's x·(1+w)
  float embedding_scale = 1.0f;      // Gemma: √hidden (fp32)
  float attention_scale = 0.0f;      // score multiplier
  float attn_logit_softcap = 0.0f;   // 0: off
  float final_logit_softcap = 0.0f;  // 0: off
  bool qk_norm = false;
  bool attention_bias = false;
  bool sandwich_norms = false;       // Gemma: post-attention and post-MLP norms
  bool tie_word_embeddings = false;
  kernels::Activation activation = kernels::Activation::kSilu;
  int sliding_window = 0;            // tokens; 0: none
  std::vector<bool> layer_is_sliding;  // [num_layers]
};

// INVALID_ARGUMENT naming the field for an unsupported architecture or an inconsistent config.
absl::StatusOr<ResolvedConfig> ResolveConfig(const v1::ModelConfig& config);

class DecoderModel {
 public:
  static absl::StatusOr<std::unique_ptr<DecoderModel>> Load(const v1::ModelConfig& config,
                                                            const WeightSource& weights, ThreadPool* pool);
  ~DecoderModel();

  const v1::ModelConfig& config() const { return config_; }
  const ResolvedConfig& resolved() const { return cfg_; }
  int vocab_size() const { return cfg_.vocab_size; }

  // An empty cache able to hold `capacity` tokens of this model.
  KvCache NewKvCache(int capacity) const;

  enum class Logits { kAll, kLast, kNone };

  // Runs tokens[i] at positions[i] (same length, ≥ 1 token) after what `cache` already holds, appends
  // their keys and values to the cache, and returns logits: [tokens, vocab] for kAll, [vocab] for kLast,
  // empty for kNone. A prompt is one call (prefill); each generated token another (decode); the logits
  // are the same either way. Positions are normally cache.length() + i; attention masks by position.
  // INVALID_ARGUMENT for a token id out of range, mismatched lengths or a negative position;
  // RESOURCE_EXHAUSTED when the cache is too small. The cache is unchanged on error.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens,
                                             absl::Span<const int32_t> positions, KvCache& cache,
                                             Logits which) const;

 private:
  struct Layer;
  DecoderModel() = default;
  absl::Status LoadWeights(const WeightSource& weights);

  v1::ModelConfig config_;
  ResolvedConfig cfg_;
  ThreadPool* pool_ = nullptr;
  kernels::RopeTable global_rope_;
  kernels::RopeTable local_rope_;
  std::vector<float> embed_;       // [vocab, hidden]
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to embed_
  std::vector<Layer> layers_;
};

}  // namespace bitloom::engine
