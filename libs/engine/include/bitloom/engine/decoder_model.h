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
//
// Besides the whole-model Forward(), the model exposes its pieces for the quantizer (libs/quant's
// EngineBlockRunner): EmbedTokens(), ForwardLayer() (one decoder layer over a batch of independent
// sequences, without a KV cache, with substitutable linear weights and a callback that sees each
// linear layer's input) and HeadLogits(). Forward() is built from the same code, so chaining
// EmbedTokens → ForwardLayer for every layer → HeadLogits reproduces Forward()'s logits bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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

// The seven linear weights of one decoder layer, fp32, row-major [out_features, in_features]
// (Hugging Face orientation). In ForwardLayer() an empty span stands for the model's own weight.
struct LayerLinearWeights {
  absl::Span<const float> q_proj;     // [heads · head_dim, hidden]
  absl::Span<const float> k_proj;     // [kv_heads · head_dim, hidden]
  absl::Span<const float> v_proj;     // [kv_heads · head_dim, hidden]
  absl::Span<const float> o_proj;     // [hidden, heads · head_dim]
  absl::Span<const float> gate_proj;  // [intermediate, hidden]
  absl::Span<const float> up_proj;    // [intermediate, hidden]
  absl::Span<const float> down_proj;  // [hidden, intermediate]
};

// The distinct activations the linear layers of a block read (the quantizer's "input sites"):
// q/k/v share the normed attention input, gate/up the normed MLP input; o_proj reads the attention
// output and down_proj the gated activation. Declared in the order a layer computes them.
enum class LinearInput {
  kAttention = 0,        // q_proj, k_proj, v_proj; width hidden
  kAttentionOutput = 1,  // o_proj; width heads · head_dim
  kMlp = 2,              // gate_proj, up_proj; width hidden
  kMlpOutput = 3,        // down_proj; width intermediate
};

// Sees `x` [rows, dim], the input of the linear layers reading `input`, before they run. A non-OK
// status aborts the layer and is returned by ForwardLayer(). The span is valid during the call only.
using LinearInputCapture =
    std::function<absl::Status(LinearInput input, absl::Span<const float> x, int64_t rows, int64_t dim)>;

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

  // ---- Per-layer API (the quantizer's block forward). Same math and same bits as Forward().

  // The residual stream entering layer 0: [tokens, hidden] (embedding rows times embedding_scale).
  // INVALID_ARGUMENT for a token id out of range.
  absl::StatusOr<std::vector<float>> EmbedTokens(absl::Span<const int32_t> tokens) const;

  // Runs decoder layer `layer` in place on `hidden` [rows, hidden_size], rows = positions.size(),
  // split into `sequences` equal contiguous segments that are independent sequences: a row attends
  // to the rows of its own segment whose positions do not exceed its own (and lie in the layer's
  // sliding window), exactly as Forward() attends over a cache holding that segment. Nothing is kept
  // between calls. `weights` substitutes the layer's linear weights (empty spans: the model's own);
  // norms, biases and RoPE are the model's. `capture` (may be empty) is called once per LinearInput,
  // in enum order, with the activation the linear layers read.
  // INVALID_ARGUMENT for a layer out of range, rows not divisible by sequences, a negative position
  // or a substituted weight of the wrong size (naming it).
  absl::Status ForwardLayer(int layer, absl::Span<float> hidden, absl::Span<const int32_t> positions,
                            int64_t sequences, const LayerLinearWeights& weights,
                            const LinearInputCapture& capture) const;

  // Logits [rows, vocab] of residual-stream rows [rows, hidden] leaving the last layer: final norm,
  // output head, final soft-capping.
  absl::StatusOr<std::vector<float>> HeadLogits(absl::Span<const float> hidden) const;

  // The final norm's weight [hidden] and the output head [vocab, hidden] (the embedding when tied),
  // the parameters HeadLogits() applies (views into the model, valid while it lives).
  absl::Span<const float> final_norm() const { return final_norm_; }
  absl::Span<const float> output_head() const { return lm_head_.empty() ? embed_ : lm_head_; }

  // The model's own linear weights of `layer` (views into the model, valid while it lives).
  LayerLinearWeights linear_weights(int layer) const;

 private:
  struct Layer;
  struct Scratch;
  // Where a layer's keys and values go and what its queries attend over: the cache (Forward) or,
  // without one, each of `sequences` equal segments of the batch on its own (ForwardLayer).
  struct AttentionScope {
    KvCache* cache = nullptr;  // keys/values appended at slots [start, start + rows)
    int64_t start = 0;
    int64_t sequences = 1;     // used when cache is null
  };
  DecoderModel() = default;
  absl::Status LoadWeights(const WeightSource& weights);
  // The body of a layer, shared by Forward() and ForwardLayer(): x [n, hidden] in place.
  absl::Status RunLayer(int li, const LayerLinearWeights& w, float* x, int64_t n, const int32_t* positions,
                        const AttentionScope& scope, const LinearInputCapture& capture, Scratch& s) const;

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
