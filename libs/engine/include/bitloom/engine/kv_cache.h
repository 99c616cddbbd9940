// KvCache: the keys and values of one sequence for every layer, contiguous, for the CPU engine.
//
// Slot s of layer l holds the post-RoPE key and the value of the token written s-th, plus that token's
// position (attention masks by position, so a sliding window needs no eviction here). Capacity is fixed
// at construction: memory is num_layers · capacity · 2 · kv_heads · head_dim floats. The paged GPU cache
// is a different class; this one is the reference it is checked against. Not thread-safe: one sequence,
// one user at a time.
#pragma once

#include <cstdint>
#include <vector>

namespace bitloom::engine {

class KvCache {
 public:
  KvCache(int num_layers, int num_kv_heads, int head_dim, int capacity);

  int length() const { return length_; }
  int capacity() const { return capacity_; }
  int num_layers() const { return num_layers_; }
  // Floats between consecutive slots: num_kv_heads · head_dim.
  int64_t slot_stride() const { return slot_stride_; }

  // [capacity, kv_heads, head_dim] for layer l.
  float* keys(int layer) { return keys_[layer].data(); }
  float* values(int layer) { return values_[layer].data(); }
  const float* keys(int layer) const { return keys_[layer].data(); }
  const float* values(int layer) const { return values_[layer].data(); }
  int32_t* positions() { return positions_.data(); }
  const int32_t* positions() const { return positions_.data(); }

  // Marks `n` more slots as written (the forward pass fills them first, then commits).
  void Commit(int n) { length_ += n; }
  // Forgets everything after the first `n` slots (n <= length), e.g. to re-run from a shared prefix.
  void Truncate(int n) { length_ = n < length_ ? n : length_; }
  void Clear() { length_ = 0; }

 private:
  int num_layers_;
  int capacity_;
  int64_t slot_stride_;
  int length_ = 0;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
  std::vector<int32_t> positions_;
};

}  // namespace bitloom::engine
