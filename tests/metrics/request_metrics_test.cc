#include "bitloom/metrics/request_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bitloom::metrics {
namespace {

using ::testing::HasSubstr;

TEST(RequestMetricsTest, BeginEndRecordsAllThree) {
  MetricsRegistry registry;
  absl::StatusOr<RequestMetrics> metrics = RequestMetrics::Create(registry, "bitloom_inferd");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string method = "/bitloom.v1.Inference/Generate";
  metrics->Begin(method);
  metrics->Begin(method);
  std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_requests_in_flight{method=\"" + method +
                              "\"} 2\n"));
  metrics->End(method, "OK", 0.003);
  metrics->End(method, "RESOURCE_EXHAUSTED", 700);
  text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_requests_in_flight{method=\"" + method +
                              "\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_requests_total{method=\"" + method +
                              "\",code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_requests_total{method=\"" + method +
                              "\",code=\"RESOURCE_EXHAUSTED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_request_duration_seconds_bucket{method=\"" +
                              method + "\",le=\"0.001\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_request_duration_seconds_bucket{method=\"" +
                              method + "\",le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_request_duration_seconds_bucket{method=\"" +
                              method + "\",le=\"600\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_request_duration_seconds_bucket{method=\"" +
                              method + "\",le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("bitloom_inferd_grpc_request_duration_seconds_count{method=\"" +
                              method + "\"} 2\n"));
}

TEST(RequestMetricsTest, BucketsSpanOneMillisecondToTenMinutes) {
  const std::vector<double>& buckets = RequestMetrics::DurationBuckets();
  EXPECT_EQ(buckets.front(), 0.001);
  EXPECT_EQ(buckets.back(), 600);
  EXPECT_TRUE(std::is_sorted(buckets.begin(), buckets.end()));
}

TEST(RequestMetricsTest, TwiceWithOnePrefixFails) {
  MetricsRegistry registry;
  ASSERT_TRUE(RequestMetrics::Create(registry, "bitloom_quantd").ok());
  EXPECT_FALSE(RequestMetrics::Create(registry, "bitloom_quantd").ok());
  EXPECT_TRUE(RequestMetrics::Create(registry, "bitloom_inferd").ok());
}

}  // namespace
}  // namespace bitloom::metrics
