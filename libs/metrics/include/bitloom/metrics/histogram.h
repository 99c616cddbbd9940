// Histogram: counts observations (latencies, sizes) into fixed buckets, plus their sum and count.
//
// Bucket upper bounds are fixed when the family is registered and shared by all of its children; a
// bucket counts the observations <= its bound, and an implicit +Inf bucket counts every observation.
// A Histogram is owned by its MetricFamily and lives as long as the MetricsRegistry. Observe() is
// thread-safe and lock-free (a binary search, then two atomic adds). A scrape taken while observations
// are in flight may see an observation in the bucket counts but not yet in the sum; the exported
// _count is always derived from the buckets, so _count equals the +Inf bucket in every scrape.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace bitloom::metrics {

class Histogram {
 public:
  // `bounds` must already be validated (see ValidateBucketBounds); the family shares one copy.
  explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Records `value`. NaN is dropped and false returned: it fits no bucket and would make _sum NaN
  // forever.
  bool Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf; non-decreasing
    double sum = 0.0;
    uint64_t count = 0;  // == cumulative_counts.back()
  };
  Snapshot Read() const;

  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  // Per-bucket (not cumulative) counts, bounds_->size() + 1 entries; the last one is +Inf. Keeping
  // them non-cumulative makes Observe touch one counter; Read() accumulates.
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

// Checks that `bounds` are finite and strictly increasing; a trailing +Inf is accepted and removed
// (the +Inf bucket is always implicit). Returns the bounds to use, or INVALID_ARGUMENT.
absl::StatusOr<std::vector<double>> ValidateBucketBounds(std::vector<double> bounds);

// `count` bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` bounds start, start+width, ... (width > 0).
std::vector<double> LinearBuckets(double start, double width, int count);

}  // namespace bitloom::metrics
