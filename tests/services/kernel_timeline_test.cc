// The kernel timeline's arithmetic (tools/bitloom/kernel_timeline.h), on hand-made spans: the last
// step's kernels with their gaps and overlaps, the step totals, names shortened, bad splits
// rejected. No GPU: the CUPTI recorder is exercised by bench_gpu_test.
#include "kernel_timeline.h"

#include <gtest/gtest.h>

#include <vector>

namespace bitloom::tools {
namespace {

TEST(KernelTimeline, ShortNamesDropReturnTypeNamespacesAndParameters) {
  EXPECT_EQ(ShortKernelName("void bitloom::kernels::cuda::(anonymous namespace)::StreamedGemvKernel"
                            "<4, 4, false>(bitloom::kernels::cuda::(anonymous namespace)::"
                            "GemvGroupArgs, int)"),
            "StreamedGemvKernel<4, 4, false>");
  EXPECT_EQ(ShortKernelName("void ns::HadamardRotateTiledKernel<float, __half, 28>(ns::Args)"),
            "HadamardRotateTiledKernel<float, __half, 28>");
  EXPECT_EQ(ShortKernelName("Plain"), "Plain");
  EXPECT_EQ(ShortKernelName("void f()"), "f");
}

TEST(KernelTimeline, LastStepWithGapsAndOverlaps) {
  // Two steps of three kernels, given out of order; times in ns.
  std::vector<KernelSpan> spans = {
      {"b", 13'000, 15'000}, {"a", 10'000, 12'000}, {"c", 14'500, 16'000},
      {"a", 0, 2'000},       {"c", 4'500, 6'000},   {"b", 3'000, 5'000},
  };
  auto j = SummarizeTimeline(spans, 2);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["kernels_per_step"].get<int>(), 3);
  const nlohmann::json& k = (*j)["kernels"];
  ASSERT_EQ(k.size(), 3u);
  EXPECT_EQ(k[0]["name"], "a");
  EXPECT_DOUBLE_EQ(k[0]["start_us"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(k[1]["gap_us"].get<double>(), 1.0);   // b starts 1 µs after a ends
  EXPECT_DOUBLE_EQ(k[2]["gap_us"].get<double>(), -0.5);  // c starts 0.5 µs before b ends
  EXPECT_DOUBLE_EQ(k[2]["duration_us"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ((*j)["step_span_us"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ((*j)["kernel_time_us"].get<double>(), 5.5);
  EXPECT_DOUBLE_EQ((*j)["gaps_us"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ((*j)["overlap_us"].get<double>(), 0.5);
}

TEST(KernelTimeline, RejectsSpansThatDoNotSplitIntoEqualSteps) {
  const std::vector<KernelSpan> spans = {{"a", 0, 1}, {"b", 2, 3}, {"c", 4, 5}};
  EXPECT_EQ(SummarizeTimeline(spans, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SummarizeTimeline({}, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SummarizeTimeline(spans, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(SummarizeTimeline(spans, 3).ok());
}

}  // namespace
}  // namespace bitloom::tools
