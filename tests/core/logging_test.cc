#include "bitloom/core/logging.h"

#include "gtest/gtest.h"

namespace bitloom {
namespace {

TEST(LoggingTest, ParsesLevelsAndRejectsUnknown) {
  EXPECT_EQ(*ParseLogLevel("DEBUG"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarning);
  auto bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("loud"), absl::string_view::npos);
}

TEST(LoggingTest, BelowThresholdIsNotEvaluated) {
  SetLogLevel(LogLevel::kWarning);
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  BITLOOM_LOG(INFO) << count();
  EXPECT_EQ(evaluated, 0);
  BITLOOM_LOG(ERROR) << "expected test output " << count();
  EXPECT_EQ(evaluated, 1);
  SetLogLevel(LogLevel::kInfo);
}

}  // namespace
}  // namespace bitloom
