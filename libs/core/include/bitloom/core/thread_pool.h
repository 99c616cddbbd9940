// ThreadPool: a fixed set of worker threads running submitted closures in FIFO order.
//
// Thread-safe. The destructor finishes the queued work and joins the workers. ParallelFor splits an
// index range into contiguous chunks, runs them on the pool and the calling thread, and returns when
// all are done; it must not be called from inside a pool task.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bitloom {

class ThreadPool {
 public:
  // `num_threads` 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(size_t num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t num_threads() const { return workers_.size(); }
  void Schedule(std::function<void()> task);
  // Calls fn(begin_i, end_i) over disjoint chunks covering [begin, end).
  void ParallelFor(size_t begin, size_t end, const std::function<void(size_t, size_t)>& fn);

 private:
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace bitloom
