#include "bitloom/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dot.h"
#include "parallel.h"

namespace bitloom::kernels {

absl::Status AttentionF32(const AttentionParams& p, ThreadPool* pool) {
  if (p.num_tokens < 0 || p.num_kv < 0 || p.num_heads <= 0 || p.num_kv_heads <= 0 || p.head_dim <= 0 ||
      p.sliding_window < 0) {
    return absl::InvalidArgumentError("AttentionF32: bad shape");
  }
  if (p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError("AttentionF32: num_kv_heads must divide num_heads");
  }
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.q == nullptr || p.out == nullptr || p.q_positions == nullptr ||
      (p.num_kv > 0 && (p.k == nullptr || p.v == nullptr || p.kv_positions == nullptr))) {
    return absl::InvalidArgumentError("AttentionF32: null pointer");
  }
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t kv_stride = p.num_kv_heads * p.head_dim;  // floats between consecutive cache slots
  internal::ParallelRange(
      pool, p.num_tokens * p.num_heads, p.num_kv * p.head_dim * 2, [&](int64_t i0, int64_t i1) {
        std::vector<float> scores(static_cast<size_t>(p.num_kv));
        std::vector<float> acc(static_cast<size_t>(p.head_dim));
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t t = i / p.num_heads;
          const int64_t h = i % p.num_heads;
          const int64_t g = h / group;
          const float* q = p.q + i * p.head_dim;
          const int32_t qpos = p.q_positions[t];
          float max_s = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < p.num_kv; ++j) {
            const int64_t kpos = p.kv_positions[j];
            const bool visible = kpos <= qpos && (p.sliding_window == 0 || qpos - kpos < p.sliding_window);
            if (!visible) {
              scores[j] = -std::numeric_limits<float>::infinity();
              continue;
            }
            float s = internal::DotF32(q, p.k + j * kv_stride + g * p.head_dim, p.head_dim) * p.scale;
            if (p.logit_softcap > 0.0f) {
              s = static_cast<float>(p.logit_softcap * std::tanh(static_cast<double>(s) / p.logit_softcap));
            }
            scores[j] = s;
            max_s = std::max(max_s, s);
          }
          float* out = p.out + i * p.head_dim;
          if (max_s == -std::numeric_limits<float>::infinity()) {
            for (int64_t d = 0; d < p.head_dim; ++d) out[d] = 0.0f;
            continue;
          }
          double denom = 0.0;
          for (int64_t j = 0; j < p.num_kv; ++j) {
            const float e = scores[j] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(scores[j] - max_s);
            scores[j] = e;
            denom += e;
          }
          const float inv = static_cast<float>(1.0 / denom);
          for (int64_t d = 0; d < p.head_dim; ++d) acc[d] = 0.0f;
          for (int64_t j = 0; j < p.num_kv; ++j) {
            if (scores[j] == 0.0f) continue;
            const float w = scores[j] * inv;
            const float* vj = p.v + j * kv_stride + g * p.head_dim;
            for (int64_t d = 0; d < p.head_dim; ++d) acc[d] += w * vj[d];
          }
          for (int64_t d = 0; d < p.head_dim; ++d) out[d] = acc[d];
        }
      });
  return absl::OkStatus();
}

}  // namespace bitloom::kernels
