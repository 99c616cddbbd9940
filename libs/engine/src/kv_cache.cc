#include "bitloom/engine/kv_cache.h"

#include <cstddef>

namespace bitloom::engine {

KvCache::KvCache(int num_layers, int num_kv_heads, int head_dim, int capacity)
    : num_layers_(num_layers),
      capacity_(capacity),
      slot_stride_(static_cast<int64_t>(num_kv_heads) * head_dim),
      keys_(num_layers),
      values_(num_layers),
      positions_(capacity) {
  for (int l = 0; l < num_layers; ++l) {
    keys_[l].assign(static_cast<std::size_t>(capacity * slot_stride_), 0.0f);
    values_[l].assign(static_cast<std::size_t>(capacity * slot_stride_), 0.0f);
  }
}

}  // namespace bitloom::engine
