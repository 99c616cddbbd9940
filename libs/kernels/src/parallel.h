// Runs a kernel's index range on the caller's ThreadPool, or inline when there is none or the work is
// too small to be worth waking threads for.
#pragma once

#include <cstdint>
#include <functional>

#include "bitloom/core/thread_pool.h"

namespace bitloom::kernels::internal {

// Calls fn(begin, end) over disjoint chunks covering [0, n). `cost_per_item` is a rough count of
// multiply-adds per index; ranges below ~64k of them run on the calling thread.
inline void ParallelRange(ThreadPool* pool, int64_t n, int64_t cost_per_item,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  constexpr int64_t kMinParallelWork = 1 << 16;
  if (pool == nullptr || pool->num_threads() == 0 || n == 1 || n * cost_per_item < kMinParallelWork) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(0, static_cast<size_t>(n), [&fn](size_t lo, size_t hi) {
    fn(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  });
}

}  // namespace bitloom::kernels::internal
