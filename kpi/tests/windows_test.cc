#include <gtest/gtest.h>

#include "kpi/catalog.h"

namespace kpistream::kpi {
namespace {

// 2026-03-29 is the day Europe/Berlin moves from CET (+1) to CEST (+2).
constexpr int64_t kBerlinDstDayNoonUtc = 1774785600;  // 2026-03-29T12:00:00Z

TimeRange R(std::string_view w, int64_t now, const std::string& tz = "UTC") {
  auto r = ResolveWindow(w, now, tz);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : TimeRange{0, 0};
}

TEST(WindowsTest, RollingAndAll) {
  EXPECT_EQ(R("5m", 1000000).start, 1000000 - 300);
  EXPECT_EQ(R("5m", 1000000).end, 1000000);
  EXPECT_EQ(R("all", 1000000).start, 0);
}

TEST(WindowsTest, CalendarInUtc) {
  const int64_t now = 1779883200;                    // 2026-05-27T12:00:00Z, a Wednesday
  EXPECT_EQ(R("today", now).start, 1779840000);      // 2026-05-27
  EXPECT_EQ(R("yesterday", now).start, 1779753600);  // 2026-05-26
  EXPECT_EQ(R("yesterday", now).end, 1779840000);
  EXPECT_EQ(R("wtd", now).start, 1779667200);            // Monday 2026-05-25
  EXPECT_EQ(R("previous_week", now).start, 1779062400);  // Monday 2026-05-18
  EXPECT_EQ(R("previous_week", now).end, 1779667200);
  EXPECT_EQ(R("mtd", now).start, 1777593600);             // 2026-05-01
  EXPECT_EQ(R("previous_month", now).start, 1775001600);  // 2026-04-01
  EXPECT_EQ(R("previous_month", now).end, 1777593600);
  EXPECT_EQ(R("qtd", now).start, 1775001600);  // 2026-04-01
  EXPECT_EQ(R("ytd", now).start, 1767225600);  // 2026-01-01
}

TEST(WindowsTest, MonthEndsAndLeapYears) {
  // 2028-03-01T00:30Z: previous month is February of a leap year (29 days).
  const auto r = R("previous_month", 1835483400);
  EXPECT_EQ(r.end - r.start, 29 * 86400);
  // 2026-01-15: previous month wraps to December 2025 (31 days).
  const auto d = R("previous_month", 1768478400);
  EXPECT_EQ(d.start, 1764547200);
  EXPECT_EQ(d.end - d.start, 31 * 86400);
}

TEST(WindowsTest, DaylightSavingChanges) {
  // In Berlin the DST day has 23 hours; "today" starts at local midnight,
  // which is 23:00 UTC the day before (still CET).
  const auto today = R("today", kBerlinDstDayNoonUtc, "Europe/Berlin");
  EXPECT_EQ(today.start, 1774738800);  // 2026-03-28T23:00:00Z
  const auto yesterday = R("yesterday", kBerlinDstDayNoonUtc + 86400, "Europe/Berlin");
  EXPECT_EQ(yesterday.end - yesterday.start, 23 * 3600);
  // New York's autumn change: a 25-hour day.
  const auto ny = R("yesterday", 1793628000, "America/New_York");  // 2026-11-02T14:00Z
  EXPECT_EQ(ny.end - ny.start, 25 * 3600);
}

TEST(WindowsTest, BadWindowsAndZones) {
  EXPECT_FALSE(ResolveWindow("fortnight", 0, "UTC").ok());
  EXPECT_FALSE(ResolveWindow("today", 0, "Nowhere/City").ok());
}

}  // namespace
}  // namespace kpistream::kpi
