#include "bitloom/core/thread_pool.h"

#include <algorithm>
#include <latch>

namespace bitloom {

ThreadPool::ThreadPool(size_t num_threads) {
  if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(num_threads);
  for (size_t i = 0; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

void ThreadPool::ParallelFor(size_t begin, size_t end,
                             const std::function<void(size_t, size_t)>& fn) {
  if (begin >= end) return;
  const size_t n = end - begin;
  const size_t chunks = std::min(n, num_threads() + 1);
  const size_t per_chunk = (n + chunks - 1) / chunks;
  const size_t used = (n + per_chunk - 1) / per_chunk;
  std::latch done(static_cast<std::ptrdiff_t>(used - 1));
  for (size_t c = 1; c < used; ++c) {
    const size_t lo = begin + c * per_chunk;
    const size_t hi = std::min(end, lo + per_chunk);
    Schedule([&fn, &done, lo, hi] {
      fn(lo, hi);
      done.count_down();
    });
  }
  fn(begin, std::min(end, begin + per_chunk));
  done.wait();
}

}  // namespace bitloom
