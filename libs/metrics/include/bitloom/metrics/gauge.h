// Gauge: a value that goes up and down (requests in flight, bytes in a pool, jobs in a state).
//
// A Gauge is owned by its MetricFamily and lives as long as the MetricsRegistry; callers keep the
// reference WithLabels() returns. All methods are thread-safe and lock-free (one atomic operation).
// For values that are cheaper to read when scraped than to track, see
// MetricsRegistry::AddGaugeCallback.
#pragma once

#include <atomic>

namespace bitloom::metrics {

class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double delta = 1.0) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Decrement(double delta = 1.0) { value_.fetch_sub(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace bitloom::metrics
