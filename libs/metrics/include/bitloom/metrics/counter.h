// Counter: a monotonically increasing value (requests served, bytes written, seconds spent).
//
// A Counter is owned by its MetricFamily and lives as long as the MetricsRegistry; callers keep the
// reference WithLabels() returns and increment it directly. All methods are thread-safe and lock-free:
// the hot path is one atomic read-modify-write, so counters can sit on request paths.
#pragma once

#include <atomic>

namespace bitloom::metrics {

class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `delta`. A counter only goes up (Prometheus treats any decrease as a process restart), so a
  // negative or NaN delta is dropped, logged once per counter, and false is returned.
  bool Increment(double delta = 1.0) {
    if (!(delta >= 0.0)) [[unlikely]] {
      ReportRejected(delta);
      return false;
    }
    // Relaxed: a counter orders nothing else; a scrape only needs an eventually visible total.
    value_.fetch_add(delta, std::memory_order_relaxed);
    return true;
  }

  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  void ReportRejected(double delta);

  std::atomic<double> value_{0.0};
  std::atomic<bool> reported_rejection_{false};
};

}  // namespace bitloom::metrics
