#include "text_format.h"

#include <cstdlib>
#include <limits>

#include <gtest/gtest.h>

namespace bitloom::metrics::internal {
namespace {

TEST(TextFormatTest, DoublesUseShortestRoundTripForm) {
  EXPECT_EQ(FormatDouble(0), "0");
  EXPECT_EQ(FormatDouble(1), "1");
  EXPECT_EQ(FormatDouble(-2.5), "-2.5");
  EXPECT_EQ(FormatDouble(0.1), "0.1");
  EXPECT_EQ(FormatDouble(0.005), "0.005");
  EXPECT_EQ(FormatDouble(123456789), "123456789");
  EXPECT_EQ(FormatDouble(1e21), "1e+21");
  EXPECT_EQ(FormatDouble(9007199254740993.0), "9007199254740992");
}

TEST(TextFormatTest, SpecialDoubles) {
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatDouble(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(TextFormatTest, DoublesRoundTrip) {
  const double values[] = {1.0 / 3, 2.0 / 3, 1e-300, 1.7976931348623157e308, 5e-324, 0.1 + 0.2,
                           123.456e-7};
  for (const double value : values) {
    const std::string text = FormatDouble(value);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), value) << text;
  }
}

TEST(TextFormatTest, HelpEscapesBackslashAndNewlineOnly) {
  std::string out;
  AppendEscapedHelp("a\\b\nc\"d", &out);
  EXPECT_EQ(out, "a\\\\b\\nc\"d");
}

TEST(TextFormatTest, LabelValueEscapesBackslashQuoteAndNewline) {
  std::string out;
  AppendEscapedLabelValue("a\\b\nc\"d", &out);
  EXPECT_EQ(out, "a\\\\b\\nc\\\"d");
}

TEST(TextFormatTest, LabelPairs) {
  EXPECT_EQ(FormatLabelPairs({"a", "b"}, {"x", "y\"z"}), "a=\"x\",b=\"y\\\"z\"");
  EXPECT_EQ(FormatLabelPairs({}, {}), "");
}

}  // namespace
}  // namespace bitloom::metrics::internal
