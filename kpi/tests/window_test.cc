#include <gtest/gtest.h>

#include "kpi/window.h"

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

TEST(DecomposeWindowTest, UsesCoarsestTiersInside) {
  // 23:58 day 0 .. 01:02 day 2, fine = 1m.
  const int64_t start = 86400 - 120, end = 2 * 86400 + 3720;
  auto pieces = DecomposeWindow(start, end, 60);
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0].tier, Tier::kFine);
  EXPECT_EQ(pieces[0].begin, start);
  EXPECT_EQ(pieces[0].end, 86400);
  EXPECT_EQ(pieces[1].tier, Tier::kDay);
  EXPECT_EQ(pieces[1].end, 2 * 86400);
  EXPECT_EQ(pieces[2].tier, Tier::kHour);
  EXPECT_EQ(pieces[2].end, 2 * 86400 + 3600);
  EXPECT_EQ(pieces[3].tier, Tier::kFine);
  EXPECT_EQ(pieces[3].end, end);
  // Pieces tile the window exactly.
  int64_t t = start;
  for (const auto& p : pieces) {
    EXPECT_EQ(p.begin, t);
    t = p.end;
  }
}

TEST(DecomposeWindowTest, HourBucketsHaveNoHourTier) {
  auto pieces = DecomposeWindow(3600, 3 * 86400, 3600);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].tier, Tier::kFine);
  EXPECT_EQ(pieces[0].end, 86400);
  EXPECT_EQ(pieces[1].tier, Tier::kDay);
}

TEST(DurationsTest, ZeroOnlyWhereAllowedAndMilliseconds) {
  EXPECT_FALSE(ParseDuration("0s").ok());
  EXPECT_EQ(*ParseDurationOrZero("0s"), 0);
  EXPECT_EQ(*ParseDurationOrZero("0"), 0);
  EXPECT_EQ(*ParseDurationOrZero("0m"), 0);
  EXPECT_EQ(*ParseDurationOrZero("90s"), 90);
  EXPECT_FALSE(ParseDurationOrZero("-1s").ok());
  EXPECT_EQ(*ParseDurationMs("200ms"), 200);
  EXPECT_EQ(*ParseDurationMs("2s"), 2000);
  const auto bad = ParseDurationMs("fastms");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("200ms"), std::string_view::npos) << bad.status();
  EXPECT_FALSE(ParseDurationMs("0ms").ok());
  EXPECT_FALSE(ParseDurationMs("ms").ok());
}

TEST(ZoneAlignmentTest, WholeHalfAndQuarterHourZones) {
  EXPECT_EQ(*ZoneAlignment("UTC"), 86400);
  EXPECT_EQ(*ZoneAlignment("Europe/Berlin"), 3600);
  EXPECT_EQ(*ZoneAlignment("America/New_York"), 3600);
  EXPECT_EQ(*ZoneAlignment("Asia/Kolkata"), 1800);         // +05:30
  EXPECT_EQ(*ZoneAlignment("Asia/Kathmandu"), 900);        // +05:45
  EXPECT_EQ(*ZoneAlignment("Australia/Lord_Howe"), 1800);  // +10:30, DST +11:00 (a 30-minute shift)
  EXPECT_EQ(*ZoneAlignment("Australia/Adelaide"), 1800);   // +09:30 / +10:30
  EXPECT_EQ(*ZoneAlignment("Pacific/Chatham"), 900);       // +12:45 / +13:45
  EXPECT_EQ(*ZoneAlignment("America/St_Johns"), 1800);     // -03:30 / -02:30
  EXPECT_FALSE(ZoneAlignment("Nowhere/City").ok());
  EXPECT_EQ(StorageBucket(3600, 1800), 1800);
  EXPECT_EQ(StorageBucket(86400, 3600), 3600);
  EXPECT_EQ(StorageBucket(300, 1800), 300);
  EXPECT_EQ(StorageBucket(3600, 900), 900);
}

// Every calendar window of these zones, for a year of days, starts and ends
// on the storage buckets of an hourly measure: calendar answers are exact.
TEST(ZoneAlignmentTest, CalendarWindowEdgesFallOnStorageBuckets) {
  for (const char* zone : {"UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
                           "America/St_Johns", "Pacific/Chatham"}) {
    const int64_t width = StorageBucket(3600, *ZoneAlignment(zone));
    for (int64_t now = 1767225600 + 7 * 3600 + 17; now < 1767225600 + 366 * 86400; now += 86400 + 3599) {
      for (const char* w : {"today", "yesterday", "wtd", "mtd", "qtd", "ytd", "previous_week", "previous_month"}) {
        const auto r = ResolveWindow(w, now, zone);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->start % width, 0) << zone << " " << w << " at " << now;
        if (r->end != now) {
          EXPECT_EQ(r->end % width, 0) << zone << " " << w << " at " << now;
        }
      }
    }
  }
}

TEST(CoverWindowTest, AlignedEdgesAreExact) {
  const auto c = CoverWindow({3600, 7200}, 60, 1 << 30);
  EXPECT_EQ(c.covered, (TimeRange{3600, 7200}));
  EXPECT_EQ(c.scan_begin, 3600);
  EXPECT_EQ(c.scan_end, 7200);
  EXPECT_FALSE(c.rounded);
}

TEST(CoverWindowTest, AnEndPastEveryEventReadsThroughItsBucketExactly) {
  // 1h ending 01:51:02 (now), 1m buckets, newest event at 01:51:01.
  const int64_t end = 6662;
  const auto c = CoverWindow({end - 3600, end}, 60, 6662);
  EXPECT_EQ(c.scan_end, 6720);    // the bucket holding 01:51:02 is read ...
  EXPECT_EQ(c.covered.end, end);  // ... and covers up to the end asked: nothing is stored past it
  EXPECT_EQ(c.scan_begin, 3060);  // 00:51:02 rounds to 00:51:00
  EXPECT_EQ(c.covered.start, 3060);
  EXPECT_TRUE(c.rounded);
}

TEST(CoverWindowTest, AHistoricalEndRoundsToTheNearestBoundaryNeverIntoTheFuture) {
  // The same window with data stored past its end: the end rounds, it does
  // not read the half minute after it.
  const int64_t end = 6630;  // 01:50:30
  const auto c = CoverWindow({end - 3600, end}, 60, 1 << 30);
  EXPECT_EQ(c.scan_end, 6600);
  EXPECT_EQ(c.covered, (TimeRange{3000, 6600}));
  EXPECT_TRUE(c.rounded);
  const auto later = CoverWindow({end + 20 - 3600, end + 20}, 60, 1 << 30);  // 01:50:50
  EXPECT_EQ(later.covered, (TimeRange{3060, 6660}));
  // Events a few seconds past the end (a producer's fast clock): the answer
  // covers up to them and says so.
  const auto skew = CoverWindow({end + 20 - 3600, end + 20}, 60, end + 22);
  EXPECT_EQ(skew.scan_end, 6660);
  EXPECT_EQ(skew.covered.end, end + 22);
  EXPECT_TRUE(skew.rounded);
}

TEST(CoverWindowTest, NeverMoreThanHalfABucketOffAtEitherEdge) {
  for (int64_t width : {10, 60, 300, 1800, 3600}) {
    for (int64_t end = 100000; end < 100000 + 2 * width; end += 7) {
      for (int64_t data_end : {end - 5000, end, end + 3, end + width, int64_t{1} << 40}) {
        const TimeRange asked{end - 7200, end};
        const auto c = CoverWindow(asked, width, data_end);
        EXPECT_LE(std::abs(c.covered.start - asked.start), width / 2);
        EXPECT_LE(std::abs(c.covered.end - asked.end), width / 2);
        EXPECT_EQ(c.scan_begin % width, 0);
        EXPECT_EQ(c.scan_end % width, 0);
        EXPECT_EQ(c.covered.start, c.scan_begin);
        // What is read past the covered end holds no data.
        EXPECT_TRUE(c.covered.end == c.scan_end || c.covered.end >= std::min(c.scan_end, data_end));
        EXPECT_EQ(c.rounded, !(c.covered == asked));
      }
    }
  }
}

TEST(CoverWindowTest, KolkataYesterdayOnRefinedBucketsIsExact) {
  // 2026-11-29T06:00Z; yesterday in Asia/Kolkata is 2026-11-27T18:30Z ..
  // 2026-11-28T18:30Z, on 30-minute buckets (an hourly measure, refined).
  const auto r = ResolveWindow("yesterday", 1764396000, "Asia/Kolkata");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, 1764268200);
  EXPECT_EQ(r->end, 1764354600);
  const auto c = CoverWindow(*r, StorageBucket(3600, *ZoneAlignment("Asia/Kolkata")), 1764396000);
  EXPECT_FALSE(c.rounded);
  EXPECT_EQ(c.covered, *r);
}

TEST(RetentionTest, EdgesPastFineRetentionWidenToHoursAndSaySo) {
  const int64_t now = 100 * 86400;
  auto c = CoverWindow({now - 40 * 86400 + 120, now}, 60, now);
  ASSERT_FALSE(c.rounded);
  c = ApplyRetention(c, 60, {.fine = 35 * 86400, .hour = 400 * 86400}, now);
  EXPECT_EQ(c.scan_begin, now - 40 * 86400);
  EXPECT_EQ(c.covered.start, now - 40 * 86400);
  EXPECT_TRUE(c.rounded);
  EXPECT_EQ(c.scan_end, now);
}

// A finite day retention: the window starts at the oldest day always kept,
// and says so; measures stored in hour or day buckets widen per their own
// tier only.
TEST(RetentionTest, AFiniteDayRetentionCutsTheStartAndSaysSo) {
  const int64_t now = 1000 * 86400 + 3600;
  const TierRetention r{.fine = 35 * 86400, .hour = 400 * 86400, .day = 500 * 86400};
  auto c = ApplyRetention(CoverWindow({now - 600 * 86400, now}, 60, now), 60, r, now);
  EXPECT_EQ(c.covered.start, 500 * 86400);
  EXPECT_EQ(c.scan_begin, 500 * 86400);
  EXPECT_TRUE(c.rounded);
  // Inside every retention: unchanged.
  c = ApplyRetention(CoverWindow({now - 86400, now}, 60, now), 60, r, now);
  EXPECT_FALSE(c.rounded);
  // A measure stored in hour buckets, 100 days back, 30 minutes into an
  // hour: its own (hour) buckets are kept 400 days, nothing widens.
  c = ApplyRetention(CoverWindow({now - 100 * 86400, now}, 3600, now), 3600, r, now);
  EXPECT_FALSE(c.rounded);
  EXPECT_EQ(c.covered.start, now - 100 * 86400);
}

}  // namespace
}  // namespace kpistream::kpi
