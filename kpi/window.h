// Time, in one place: durations, windows (rolling and calendar, in a time
// zone), bucket arithmetic, the decomposition of a window into the stored
// tiers, and which buckets answer a window whose edges are not on bucket
// boundaries. Every function is pure (the caller passes "now"), so each rule
// is unit-tested here once and the query path, the ground truth of the
// generator and the alert evaluator share it.
//
// Units: seconds since the Unix epoch (UTC) unless a name says _ms.
// Intervals are half-open: [start, end).
//
// Thread-safety: free functions and plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "state/keys.h"

namespace kpistream::kpi {

using state::kDaySeconds;
using state::kHourSeconds;
using state::Tier;  // roll-up tiers: the measure's own (fine) buckets, UTC hours, UTC days

// Durations: a positive whole number and a unit s, m, h or d ("30s", "5m",
// "24h", "7d"), at most 10 years. Returns seconds. INVALID_ARGUMENT with
// what to write otherwise.
[[nodiscard]] absl::StatusOr<int64_t> ParseDuration(std::string_view text);
// The same, also accepting zero ("0", "0s", "0m"): for `for` and
// `keep_firing_for`, where 0 means "at once".
[[nodiscard]] absl::StatusOr<int64_t> ParseDurationOrZero(std::string_view text);
// Milliseconds: a duration as above, or a whole number of "ms" ("200ms").
[[nodiscard]] absl::StatusOr<int64_t> ParseDurationMs(std::string_view text);

// A window: a rolling duration ("5m", "24h", "30d"), "all" (since the
// epoch), or a calendar window in a time zone: "today", "yesterday", "wtd"
// (week to date, weeks start on Monday, ISO 8601), "mtd", "qtd", "ytd",
// "previous_week", "previous_month".
struct TimeRange {
  int64_t start = 0;  // inclusive
  int64_t end = 0;    // exclusive
  bool operator==(const TimeRange&) const = default;
};
// Checks the syntax only.
[[nodiscard]] absl::Status ValidateWindow(std::string_view text);
// Whether the window is a calendar window (its edges are local midnights).
bool IsCalendarWindow(std::string_view text);
// Resolves a window ending at `now`. Rolling windows end at now; calendar
// windows follow the civil calendar of the IANA zone `timezone` (abseil's
// zone data; DST-correct: a local day can have 23 or 25 hours).
// INVALID_ARGUMENT for an unknown window or zone.
[[nodiscard]] absl::StatusOr<TimeRange> ResolveWindow(std::string_view text, int64_t now, const std::string& timezone);

// Bucket arithmetic (flooring towards -infinity).
// REQUIRES: width > 0.
int64_t FloorDiv(int64_t a, int64_t b);
int64_t FloorTo(int64_t t, int64_t width);
int64_t CeilTo(int64_t t, int64_t width);

// The widest bucket (a divisor of one day) on whose boundaries every local
// midnight of the zone falls, from 2000 to 2100: the greatest common divisor
// of a day and every UTC offset the zone uses. 86400 for UTC, 3600 for
// Europe/Berlin, 1800 for Asia/Kolkata (+05:30) and Australia/Lord_Howe
// (+10:30 / +11:00), 900 for Asia/Kathmandu (+05:45). INVALID_ARGUMENT for an
// unknown zone.
[[nodiscard]] absl::StatusOr<int64_t> ZoneAlignment(const std::string& timezone);
// The bucket width a measure is stored at: the declared width, refined to
// divide the zone's alignment, so that calendar windows in the catalog's
// zone start and end on bucket boundaries (a 1h bucket in Asia/Kolkata is
// stored at 30m). gcd(declared, alignment).
int64_t StorageBucket(int64_t declared_seconds, int64_t zone_alignment);

// A run of buckets of one tier: [begin, end).
struct WindowPiece {
  Tier tier;
  int64_t begin;
  int64_t end;
  bool operator==(const WindowPiece&) const = default;
};
// Covers [start, end) with as few buckets as possible: whole days, then
// whole hours, then fine buckets at the edges.
// REQUIRES: start and end are multiples of fine_width; fine_width divides an
// hour or equals a day.
std::vector<WindowPiece> DecomposeWindow(int64_t start, int64_t end, int64_t fine_width);

// Which buckets answer a window, and the interval the answer then covers.
//
// A window edge on a bucket boundary is exact. Otherwise:
//  - the start rounds to the nearest boundary (ties: the earlier one);
//  - the end reads through the bucket holding it when no applied event lies
//    past the end (the bucket then holds data up to the newest event only,
//    so the answer covers up to the newest event), else it rounds to the
//    nearest boundary — whichever covers an interval closer to the one
//    asked (on a tie, the boundary before the end: never past it).
// So an answer is never more than half a bucket off at either edge, the
// covered interval is exactly the data read, and `rounded` says when it
// differs from the window asked.
struct Coverage {
  TimeRange covered;   // the interval the answer covers
  int64_t scan_begin;  // buckets read: [scan_begin, scan_end), bucket-aligned
  int64_t scan_end;
  bool rounded = false;  // covered != the window asked
};
// data_end: one past the newest event time applied anywhere, in seconds
// (ceil of (newest_ms + 1) / 1000); nothing at or after it is stored.
// REQUIRES: width > 0, asked.start <= asked.end.
Coverage CoverWindow(TimeRange asked, int64_t width, int64_t data_end);

// Retention of the roll-up tiers, seconds (0 = forever).
struct TierRetention {
  int64_t fine = 0;
  int64_t hour = 0;
  int64_t day = 0;
};
// Where compaction has dropped the buckets an edge needs, widens that edge
// to the next tier's buckets (still kept): the start rounds down, the end
// up. Where even the day tier is gone (a finite day retention), the window
// starts at the oldest day kept, whether or not compaction has run yet (so
// answers do not depend on when it ran). Either way the coverage says so
// (`rounded`); a window is never narrowed silently.
Coverage ApplyRetention(Coverage c, int64_t fine_width, const TierRetention& retention, int64_t now);

}  // namespace kpistream::kpi
