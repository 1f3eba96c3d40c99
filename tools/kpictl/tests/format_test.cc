#include "tools/kpictl/format.h"

#include <gtest/gtest.h>

namespace kpistream::tools {
namespace {

TEST(FormatTest, ValuesInTheirUnit) {
  EXPECT_EQ(FormatValue(2.2671, "percent"), "2.267 %");
  EXPECT_EQ(FormatValue(13012.9412, "currency"), "13,012.94");
  EXPECT_EQ(FormatValue(-1234567.5, "currency"), "-1,234,567.50");
  EXPECT_EQ(FormatValue(3.2, "ratio"), "3.2");
  EXPECT_EQ(FormatValue(0.85, "seconds"), "850 ms");
  EXPECT_EQ(FormatValue(1.25, "seconds"), "1.25 s");
  EXPECT_EQ(FormatValue(210, "seconds"), "3.5 min");
  EXPECT_EQ(FormatValue(7560, "seconds"), "2.1 h");
  EXPECT_EQ(FormatValue(5356800, "seconds"), "62 d");
  EXPECT_EQ(FormatValue(1234, "count"), "1,234");
  EXPECT_EQ(FormatValue(52.5, "score"), "52.5");
  EXPECT_EQ(FormatValue(std::nullopt, "count"), "-");
  EXPECT_EQ(FormatValue(0, "percent"), "0 %");
}

TEST(FormatTest, Times) {
  const int64_t now = 1796040000;  // 2026-11-30T12:00:00Z
  EXPECT_EQ(*ParseTime("now", now), now);
  EXPECT_EQ(*ParseTime("-1h", now), now - 3600);
  EXPECT_EQ(*ParseTime("+5m", now), now + 300);
  EXPECT_EQ(*ParseTime("1700000000", now), 1700000000);
  EXPECT_EQ(*ParseTime("2026-11-30T12:00:00Z", now), now);
  EXPECT_EQ(*ParseTime("2026-11-30T13:00:00+01:00", now), now);
  EXPECT_EQ(FormatTime(now), "2026-11-30T12:00:00Z");
  const auto bad = ParseTime("yesterday-ish", now);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("RFC 3339"), std::string::npos);
}

TEST(FormatTest, TablesAndCsv) {
  EXPECT_EQ(Table({"A", "LONGER"}, {{"xx", "1"}, {"y", "22"}}), "A   LONGER\nxx  1\ny   22\n");
  // Colour escapes and UTF-8 do not count towards the width.
  EXPECT_EQ(Table({"S", "V"}, {{ColorStatus("good", true), "1"}, {"é", "2"}}),
            "S     V\n\x1b[32mgood\x1b[0m  1\né     2\n");
  EXPECT_EQ(Csv({"a", "b"}, {{"x,y", "say \"hi\""}}), "a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n");
  EXPECT_EQ(ColorStatus("critical", false), "critical");
}

}  // namespace
}  // namespace kpistream::tools
