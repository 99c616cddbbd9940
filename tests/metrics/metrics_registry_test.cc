#include "bitloom/metrics/metrics_registry.h"

#include <limits>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "bitloom/metrics/metric_names.h"

namespace bitloom::metrics {
namespace {

using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(MetricsRegistryTest, EmptyRegistrySerializesToNothing) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.Serialize(), "");
}

TEST(MetricsRegistryTest, CounterWithoutLabelsIsExportedFromTheStart) {
  MetricsRegistry registry;
  absl::StatusOr<CounterFamily*> family = registry.AddCounter("jobs_total", "Jobs run.");
  ASSERT_TRUE(family.ok()) << family.status();
  EXPECT_EQ(registry.Serialize(),
            "# HELP jobs_total Jobs run.\n"
            "# TYPE jobs_total counter\n"
            "jobs_total 0\n");
  Counter& counter = (*family)->WithLabels({});
  counter.Increment();
  counter.Increment(2.5);
  EXPECT_EQ(counter.Value(), 3.5);
  EXPECT_EQ(registry.Serialize(),
            "# HELP jobs_total Jobs run.\n"
            "# TYPE jobs_total counter\n"
            "jobs_total 3.5\n");
}

TEST(MetricsRegistryTest, CounterRejectsNegativeAndNaN) {
  MetricsRegistry registry;
  Counter& counter = (*registry.AddCounter("c_total", "c"))->WithLabels({});
  EXPECT_TRUE(counter.Increment(1));
  EXPECT_FALSE(counter.Increment(-1));
  EXPECT_FALSE(counter.Increment(kNaN));
  EXPECT_EQ(counter.Value(), 1);
}

TEST(MetricsRegistryTest, LabeledCounterChildrenAreSortedAndStable) {
  MetricsRegistry registry;
  CounterFamily* family = *registry.AddCounter("ops_total", "Operations.", {"op", "result"});
  // A labeled family has no samples (and is not exported) until a child exists.
  EXPECT_EQ(registry.Serialize(), "");
  Counter& publish_ok = family->WithLabels({"publish", "ok"});
  family->WithLabels({"delete", "error"}).Increment(2);
  publish_ok.Increment();
  EXPECT_EQ(&family->WithLabels({"publish", "ok"}), &publish_ok);
  EXPECT_EQ(&family->WithLabels(std::vector<std::string>{"publish", "ok"}), &publish_ok);
  EXPECT_EQ(registry.Serialize(),
            "# HELP ops_total Operations.\n"
            "# TYPE ops_total counter\n"
            "ops_total{op=\"delete\",result=\"error\"} 2\n"
            "ops_total{op=\"publish\",result=\"ok\"} 1\n");
}

TEST(MetricsRegistryTest, WrongLabelCountIsAnErrorAndNeverExported) {
  MetricsRegistry registry;
  CounterFamily* family = *registry.AddCounter("ops_total", "Operations.", {"op"});
  absl::StatusOr<Counter*> child = family->TryWithLabels({"a", "b"});
  EXPECT_EQ(child.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(child.status().message(), HasSubstr("ops_total"));
  family->WithLabels({}).Increment();  // logged, recorded into the detached child
  EXPECT_EQ(registry.Serialize(), "");
}

TEST(MetricsRegistryTest, Gauge) {
  MetricsRegistry registry;
  GaugeFamily* family = *registry.AddGauge("pool_bytes", "Pool bytes.", {"region"});
  Gauge& weights = family->WithLabels({"weights"});
  weights.Set(100);
  weights.Increment(5);
  weights.Decrement();
  family->WithLabels({"free"}).Decrement(3);
  EXPECT_EQ(weights.Value(), 104);
  EXPECT_EQ(registry.Serialize(),
            "# HELP pool_bytes Pool bytes.\n"
            "# TYPE pool_bytes gauge\n"
            "pool_bytes{region=\"free\"} -3\n"
            "pool_bytes{region=\"weights\"} 104\n");
}

TEST(MetricsRegistryTest, SpecialFloats) {
  MetricsRegistry registry;
  GaugeFamily* family = *registry.AddGauge("g", "g", {"k"});
  family->WithLabels({"a"}).Set(kInf);
  family->WithLabels({"b"}).Set(-kInf);
  family->WithLabels({"c"}).Set(kNaN);
  family->WithLabels({"d"}).Set(1e-9);
  family->WithLabels({"e"}).Set(0.1 + 0.2);
  EXPECT_EQ(registry.Serialize(),
            "# HELP g g\n"
            "# TYPE g gauge\n"
            "g{k=\"a\"} +Inf\n"
            "g{k=\"b\"} -Inf\n"
            "g{k=\"c\"} NaN\n"
            "g{k=\"d\"} 1e-09\n"
            "g{k=\"e\"} 0.30000000000000004\n");
}

TEST(MetricsRegistryTest, EscapingInHelpAndLabelValues) {
  MetricsRegistry registry;
  GaugeFamily* family =
      *registry.AddGauge("escaped", "Back\\slash, \"quotes\" and a\nnewline.", {"path"});
  family->WithLabels({"C:\\models\\\"q\"\nx"}).Set(1);
  EXPECT_EQ(registry.Serialize(),
            "# HELP escaped Back\\\\slash, \"quotes\" and a\\nnewline.\n"
            "# TYPE escaped gauge\n"
            "escaped{path=\"C:\\\\models\\\\\\\"q\\\"\\nx\"} 1\n");
}

TEST(MetricsRegistryTest, HistogramWithoutLabels) {
  MetricsRegistry registry;
  HistogramFamily* family =
      *registry.AddHistogram("latency_seconds", "Latency.", {}, {0.1, 1, 10});
  Histogram& histogram = family->WithLabels({});
  EXPECT_TRUE(histogram.Observe(0.05));
  EXPECT_TRUE(histogram.Observe(0.1));  // buckets are inclusive: lands in le="0.1"
  EXPECT_TRUE(histogram.Observe(5));
  EXPECT_TRUE(histogram.Observe(100));
  EXPECT_FALSE(histogram.Observe(kNaN));
  EXPECT_EQ(registry.Serialize(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{le=\"0.1\"} 2\n"
            "latency_seconds_bucket{le=\"1\"} 2\n"
            "latency_seconds_bucket{le=\"10\"} 3\n"
            "latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "latency_seconds_sum 105.15\n"
            "latency_seconds_count 4\n");
}

TEST(MetricsRegistryTest, HistogramWithLabels) {
  MetricsRegistry registry;
  // A trailing +Inf bound is accepted and not repeated.
  HistogramFamily* family =
      *registry.AddHistogram("size_bytes", "Sizes.", {"kind"}, {1024, kInf});
  family->WithLabels({"b"}).Observe(2048);
  family->WithLabels({"a"}).Observe(1);
  EXPECT_EQ(registry.Serialize(),
            "# HELP size_bytes Sizes.\n"
            "# TYPE size_bytes histogram\n"
            "size_bytes_bucket{kind=\"a\",le=\"1024\"} 1\n"
            "size_bytes_bucket{kind=\"a\",le=\"+Inf\"} 1\n"
            "size_bytes_sum{kind=\"a\"} 1\n"
            "size_bytes_count{kind=\"a\"} 1\n"
            "size_bytes_bucket{kind=\"b\",le=\"1024\"} 0\n"
            "size_bytes_bucket{kind=\"b\",le=\"+Inf\"} 1\n"
            "size_bytes_sum{kind=\"b\"} 2048\n"
            "size_bytes_count{kind=\"b\"} 1\n");
}

TEST(MetricsRegistryTest, InvalidBucketsRejected) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.AddHistogram("h1", "h", {}, {1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h2", "h", {}, {2, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h3", "h", {}, {kNaN}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h4", "h", {}, {-kInf, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h5", "h", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Only +Inf: allowed, a histogram that counts and sums.
  EXPECT_TRUE(registry.AddHistogram("h6", "h", {}, {}).ok());
}

TEST(MetricsRegistryTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0, 5, 3), (std::vector<double>{0, 5, 10}));
}

TEST(MetricsRegistryTest, FamiliesSortedByName) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddGauge("b", "b").ok());
  ASSERT_TRUE(registry.AddCounter("a_total", "a").ok());
  ASSERT_TRUE(registry.AddGaugeCallback("c", "c", [] { return 7.0; }).ok());
  EXPECT_EQ(registry.Serialize(),
            "# HELP a_total a\n# TYPE a_total counter\na_total 0\n"
            "# HELP b b\n# TYPE b gauge\nb 0\n"
            "# HELP c c\n# TYPE c gauge\nc 7\n");
}

TEST(MetricsRegistryTest, CallbacksEvaluatedAtScrape) {
  MetricsRegistry registry;
  double artifacts = 1;
  ASSERT_TRUE(registry.AddGaugeCallback("artifacts", "Artifacts.", [&] { return artifacts; }).ok());
  ASSERT_TRUE(registry.AddCounterCallback("cpu_seconds_total", "CPU.", [] { return 2.5; }).ok());
  EXPECT_THAT(registry.Serialize(), HasSubstr("\nartifacts 1\n"));
  artifacts = 3;
  EXPECT_THAT(registry.Serialize(), HasSubstr("\nartifacts 3\n"));
  EXPECT_THAT(registry.Serialize(), HasSubstr("# TYPE cpu_seconds_total counter\n"
                                              "cpu_seconds_total 2.5\n"));
  EXPECT_EQ(registry.AddCounterCallback("cpu_seconds", "CPU.", [] { return 0.0; }).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsRegistryTest, LabeledCallbackSortsAndDropsBadSamples) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry
                  .AddLabeledGaugeCallback("pool_bytes", "Pool.", {"region"},
                                           [] {
                                             return std::vector<LabeledValue>{
                                                 {{"weights"}, 10},
                                                 {{"free"}, 5},
                                                 {{"weights"}, 99},  // duplicate: dropped
                                                 {{"a", "b"}, 1},    // wrong arity: dropped
                                             };
                                           })
                  .ok());
  EXPECT_EQ(registry.Serialize(),
            "# HELP pool_bytes Pool.\n"
            "# TYPE pool_bytes gauge\n"
            "pool_bytes{region=\"free\"} 5\n"
            "pool_bytes{region=\"weights\"} 10\n");
}

TEST(MetricsRegistryTest, InvalidNamesRejected) {
  MetricsRegistry registry;
  for (const char* name : {"", "1abc", "has-dash", "has space", "ünïcode", "a.b"}) {
    EXPECT_EQ(registry.AddGauge(name, "h").status().code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_TRUE(registry.AddGauge("ok:name_1", "h").ok());
  EXPECT_TRUE(registry.AddGauge("_ok", "h").ok());
  for (const char* label : {"", "1a", "a-b", "__reserved", "a:b"}) {
    EXPECT_EQ(registry.AddGauge("labeled", "h", {label}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << label;
  }
  EXPECT_EQ(registry.AddGauge("labeled", "h", {"a", "a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("no_help", "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("requests", "h").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("bytes_total", "h").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("x_total", "h", {}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status status = registry.AddGauge("has-dash", "h").status();
  EXPECT_THAT(status.message(), HasSubstr("\"has-dash\""));
}

TEST(MetricsRegistryTest, ValidateNamesDirectly) {
  EXPECT_TRUE(ValidateMetricName("bitloom_quantd_jobs").ok());
  EXPECT_FALSE(ValidateMetricName("9x").ok());
  EXPECT_TRUE(ValidateLabelNames({"method", "code", "_x"}).ok());
  EXPECT_FALSE(ValidateLabelNames({"method", "method"}).ok());
}

TEST(MetricsRegistryTest, DuplicateRegistrationRejected) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddGauge("g", "h").ok());
  EXPECT_EQ(registry.AddGauge("g", "h").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGaugeCallback("g", "h", [] { return 0.0; }).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddCounter("c_total", "h").ok());
  EXPECT_EQ(registry.AddCounter("c_total", "other help", {"x"}).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(MetricsRegistryTest, HistogramSampleNameCollisionsRejected) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddGauge("latency_count", "h").ok());
  EXPECT_EQ(registry.AddHistogram("latency", "h", {}, {1}).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddHistogram("size", "h", {}, {1}).ok());
  EXPECT_EQ(registry.AddGauge("size_bucket", "h").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGauge("size", "h").status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MetricsRegistryTest, ConcurrentRecordingIsExact) {
  MetricsRegistry registry;
  CounterFamily* counters = *registry.AddCounter("events_total", "Events.", {"worker"});
  GaugeFamily* gauges = *registry.AddGauge("level", "Level.");
  HistogramFamily* histograms = *registry.AddHistogram("obs", "Obs.", {}, {0.5});
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads share one child, the other half create theirs concurrently: both the
      // lock-free hot path and the locked lookup are exercised.
      Counter& shared = counters->WithLabels({"shared"});
      Counter& own = counters->WithLabels({"w" + std::to_string(t)});
      Gauge& gauge = gauges->WithLabels({});
      Histogram& histogram = histograms->WithLabels({});
      for (int i = 0; i < kIterations; ++i) {
        shared.Increment();
        own.Increment(0.5);
        gauge.Increment(2);
        gauge.Decrement();
        histogram.Observe(i % 2 == 0 ? 0.25 : 1.0);
        if (i % 1000 == 0) (void)registry.Serialize();  // scrapes race with recording
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counters->WithLabels({"shared"}).Value(), kThreads * kIterations);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(counters->WithLabels({"w" + std::to_string(t)}).Value(), kIterations * 0.5);
  }
  EXPECT_EQ(gauges->WithLabels({}).Value(), kThreads * kIterations);
  const Histogram::Snapshot snapshot = histograms->WithLabels({}).Read();
  EXPECT_EQ(snapshot.count, uint64_t{kThreads * kIterations});
  EXPECT_EQ(snapshot.cumulative_counts[0], uint64_t{kThreads * kIterations / 2});
  EXPECT_EQ(snapshot.sum, kThreads * kIterations / 2 * 1.25);
}

}  // namespace
}  // namespace bitloom::metrics
