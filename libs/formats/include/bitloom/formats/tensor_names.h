// Bitloom's internal tensor names, shared by every reader, the engine and the quantizer.
//
// Per model:  "embed_tokens.weight" [vocab, hidden], "norm.weight" [hidden],
//             "lm_head.weight" [vocab, hidden] (absent when tie_word_embeddings).
// Per layer i, prefix "layers.{i}.":
//   "attn_norm.weight"            input RMSNorm                       [hidden]
//   "attn.q_proj.weight"          [heads*head_dim, hidden]   (+ ".bias" when attention_bias)
//   "attn.k_proj.weight"          [kv_heads*head_dim, hidden] (+ ".bias")
//   "attn.v_proj.weight"          [kv_heads*head_dim, hidden] (+ ".bias")
//   "attn.o_proj.weight"          [hidden, heads*head_dim]
//   "attn.q_norm.weight", "attn.k_norm.weight"   [head_dim]   (qk_norm: Qwen3, Gemma 3)
//   "post_attn_norm.weight"       [hidden]  Gemma 3: norm on the attention output before the residual
//   "mlp_norm.weight"             [hidden]  pre-MLP norm (HF: post_attention_layernorm for Llama)
//   "post_mlp_norm.weight"        [hidden]  Gemma 3: norm on the MLP output before the residual
//   "mlp.gate_proj.weight"        [intermediate, hidden]
//   "mlp.up_proj.weight"          [intermediate, hidden]
//   "mlp.down_proj.weight"        [hidden, intermediate]
// Gemma norms are stored as HF stores them (the weight w, applied as x * (1 + w)); the engine knows.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"

namespace bitloom::formats {

inline constexpr char kEmbedTokens[] = "embed_tokens.weight";
inline constexpr char kFinalNorm[] = "norm.weight";
inline constexpr char kLmHead[] = "lm_head.weight";

inline std::string LayerTensor(int layer, const char* suffix) {
  return absl::StrCat("layers.", layer, ".", suffix);
}

}  // namespace bitloom::formats
