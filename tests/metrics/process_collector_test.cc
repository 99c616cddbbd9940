#include "bitloom/metrics/process_collector.h"

#include <unistd.h>

#include <cmath>
#include <ctime>
#include <regex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bitloom::metrics {
namespace {

using ::testing::HasSubstr;

TEST(ProcessCollectorTest, ReadsPlausibleStats) {
  absl::StatusOr<ProcessStats> stats = ReadProcessStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GE(stats->cpu_seconds, 0);
  EXPECT_GT(stats->resident_memory_bytes, 0);
  EXPECT_GE(stats->virtual_memory_bytes, stats->resident_memory_bytes);
  EXPECT_GE(stats->open_fds, 3);  // stdin, stdout, stderr
  EXPECT_GE(stats->max_fds, stats->open_fds);
  EXPECT_GE(stats->threads, 1);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(stats->start_time_seconds, now + 1);
  EXPECT_GT(stats->start_time_seconds, now - 3600);  // this test process started recently
}

TEST(ProcessCollectorTest, CountsThreadsAndFds) {
  const double threads_before = ReadProcessStats()->threads;
  const double fds_before = ReadProcessStats()->open_fds;
  const int fd = dup(1);
  ASSERT_GE(fd, 0);
  std::atomic<bool> release{false};
  std::thread extra([&] {
    while (!release) std::this_thread::yield();
  });
  absl::StatusOr<ProcessStats> stats = ReadProcessStats();
  release = true;
  extra.join();
  close(fd);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->threads, threads_before + 1);
  EXPECT_EQ(stats->open_fds, fds_before + 1);
}

TEST(ProcessCollectorTest, RegistersEveryMetric) {
  MetricsRegistry registry;
  ASSERT_TRUE(ProcessCollector::Register(registry, "bitloom_quantd", "1.2.3").ok());
  const std::string text = registry.Serialize();
  for (const char* name :
       {"bitloom_quantd_process_cpu_seconds_total", "bitloom_quantd_process_resident_memory_bytes",
        "bitloom_quantd_process_virtual_memory_bytes", "bitloom_quantd_process_open_fds",
        "bitloom_quantd_process_max_fds", "bitloom_quantd_process_start_time_seconds",
        "bitloom_quantd_process_threads"}) {
    // One sample line per metric, with a finite value.
    const std::regex sample(std::string("\n") + name + " ([0-9.e+]+)\n");
    std::smatch match;
    ASSERT_TRUE(std::regex_search(text, match, sample)) << name << "\n" << text;
    EXPECT_TRUE(std::isfinite(std::stod(match[1].str()))) << name;
  }
  EXPECT_THAT(text, HasSubstr("# TYPE bitloom_quantd_process_cpu_seconds_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE bitloom_quantd_build_info gauge\n"
                              "bitloom_quantd_build_info{version=\"1.2.3\"} 1\n"));
  // Same prefix twice: duplicate. Another prefix: fine (tests run both daemons in one process).
  EXPECT_EQ(ProcessCollector::Register(registry, "bitloom_quantd", "1.2.3").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(ProcessCollector::Register(registry, "bitloom_inferd", "1.2.3").ok());
}

}  // namespace
}  // namespace bitloom::metrics
