#include "kpi/window.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <numeric>
#include <optional>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace kpistream::kpi {

namespace {

constexpr int64_t kMaxDurationSeconds = 3650 * kDaySeconds;

absl::StatusOr<int64_t> Duration(std::string_view text, bool zero_ok) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format(
        "bad duration \"{}\": use a {} number and a unit s, m, h or d, e.g. 5m", text, zero_ok ? "whole" : "positive"));
  };
  if (zero_ok && text == "0") return 0;
  if (text.size() < 2) return bad();
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, n);
  int64_t mult = 0;
  switch (text.back()) {
    case 's':
      mult = 1;
      break;
    case 'm':
      mult = 60;
      break;
    case 'h':
      mult = kHourSeconds;
      break;
    case 'd':
      mult = kDaySeconds;
      break;
  }
  if (ec != std::errc() || ptr != text.data() + text.size() - 1 || mult == 0 || n < (zero_ok ? 0 : 1) ||
      n > kMaxDurationSeconds / mult) {
    return bad();
  }
  return n * mult;
}

constexpr std::string_view kCalendarWindows[] = {"today", "yesterday", "wtd",           "mtd",
                                                 "qtd",   "ytd",       "previous_week", "previous_month"};

absl::Status BadWindow(std::string_view text) {
  return absl::InvalidArgumentError(
      fmt::format("bad window \"{}\": use a duration such as 5m, 1h, 24h, 7d, 30d, \"all\", or a calendar window "
                  "(today, yesterday, wtd, mtd, qtd, ytd, previous_week, previous_month)",
                  text));
}

absl::StatusOr<absl::TimeZone> LoadZone(const std::string& timezone) {
  absl::TimeZone tz;
  if (!absl::LoadTimeZone(timezone, &tz)) {
    return absl::InvalidArgumentError(fmt::format("unknown time zone '{}'", timezone));
  }
  return tz;
}

}  // namespace

absl::StatusOr<int64_t> ParseDuration(std::string_view text) { return Duration(text, false); }
absl::StatusOr<int64_t> ParseDurationOrZero(std::string_view text) { return Duration(text, true); }

absl::StatusOr<int64_t> ParseDurationMs(std::string_view text) {
  if (text.size() > 2 && text.substr(text.size() - 2) == "ms") {
    int64_t n = 0;
    const auto digits = text.substr(0, text.size() - 2);
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || ptr != digits.data() + digits.size() || n < 1 || n > kMaxDurationSeconds * 1000) {
      return absl::InvalidArgumentError(fmt::format(
          "bad duration \"{}\": use a positive whole number of ms, or a unit s, m, h or d, e.g. 200ms", text));
    }
    return n;
  }
  auto s = ParseDuration(text);
  if (!s.ok()) {
    return absl::InvalidArgumentError(fmt::format(
        "bad duration \"{}\": use a positive whole number and a unit ms, s, m, h or d, e.g. 200ms or 5s", text));
  }
  return *s * 1000;
}

bool IsCalendarWindow(std::string_view text) {
  return std::find(std::begin(kCalendarWindows), std::end(kCalendarWindows), text) != std::end(kCalendarWindows);
}

absl::Status ValidateWindow(std::string_view text) {
  if (text == "all" || IsCalendarWindow(text)) return absl::OkStatus();
  if (!ParseDuration(text).ok()) return BadWindow(text);
  return absl::OkStatus();
}

absl::StatusOr<TimeRange> ResolveWindow(std::string_view text, int64_t now, const std::string& timezone) {
  if (text == "all") return TimeRange{0, now};
  if (auto d = ParseDuration(text); d.ok()) return TimeRange{now - *d, now};
  if (!IsCalendarWindow(text)) return BadWindow(text);
  auto tz = LoadZone(timezone);
  if (!tz.ok()) return tz.status();
  const absl::CivilDay today = absl::ToCivilDay(absl::FromUnixSeconds(now), *tz);
  auto at = [&](absl::CivilDay d) { return absl::ToUnixSeconds(absl::FromCivil(d, *tz)); };
  const int since_monday =
      (static_cast<int>(absl::GetWeekday(today)) - static_cast<int>(absl::Weekday::monday) + 7) % 7;
  const absl::CivilDay monday = today - since_monday;
  const absl::CivilMonth month(today);
  const absl::CivilDay month_start(month);
  const absl::CivilMonth quarter_month(today.year(), (today.month() - 1) / 3 * 3 + 1);
  if (text == "today") return TimeRange{at(today), now};
  if (text == "yesterday") return TimeRange{at(today - 1), at(today)};
  if (text == "wtd") return TimeRange{at(monday), now};
  if (text == "previous_week") return TimeRange{at(monday - 7), at(monday)};
  if (text == "mtd") return TimeRange{at(month_start), now};
  if (text == "previous_month") return TimeRange{at(absl::CivilDay(month - 1)), at(month_start)};
  if (text == "qtd") return TimeRange{at(absl::CivilDay(quarter_month)), now};
  return TimeRange{at(absl::CivilDay(absl::CivilYear(today))), now};  // ytd
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorTo(int64_t t, int64_t width) { return FloorDiv(t, width) * width; }
int64_t CeilTo(int64_t t, int64_t width) { return -FloorDiv(-t, width) * width; }

absl::StatusOr<int64_t> ZoneAlignment(const std::string& timezone) {
  auto tz = LoadZone(timezone);
  if (!tz.ok()) return tz.status();
  // Every offset in force from 2000 to 2100 (zone history before 2000 has
  // local mean times such as +05:53:28 that no window here reaches).
  const absl::Time stop = absl::FromUnixSeconds(4102444800);  // 2100-01-01
  absl::Time t = absl::FromUnixSeconds(946684800);            // 2000-01-01
  int64_t g = std::gcd(kDaySeconds, static_cast<int64_t>(std::abs(tz->At(t).offset)));
  absl::TimeZone::CivilTransition tr;
  for (int i = 0; i < 10000 && t < stop && tz->NextTransition(t, &tr); ++i) {
    const absl::TimeZone::TimeInfo info = tz->At(tr.to);
    const absl::Time next = info.kind == absl::TimeZone::TimeInfo::UNIQUE ? info.pre : info.trans;
    t = next > t ? next : t + absl::Seconds(1);
    if (t >= stop) break;
    g = std::gcd(g, static_cast<int64_t>(std::abs(tz->At(t).offset)));
  }
  return g;
}

int64_t StorageBucket(int64_t declared_seconds, int64_t zone_alignment) {
  return std::gcd(declared_seconds, zone_alignment);
}

namespace {

std::optional<int64_t> TierWidth(Tier t, int64_t fine) {
  switch (t) {
    case Tier::kFine:
      return fine;
    case Tier::kHour:
      if (fine < kHourSeconds) return kHourSeconds;
      return std::nullopt;
    case Tier::kDay:
      if (fine < kDaySeconds) return kDaySeconds;
      return std::nullopt;
  }
  return std::nullopt;
}

void Decompose(int64_t start, int64_t end, int64_t fine, int level, std::vector<WindowPiece>* out) {
  if (start >= end) return;
  static constexpr Tier kOrder[] = {Tier::kDay, Tier::kHour, Tier::kFine};
  for (int l = level; l < 3; ++l) {
    const auto w = TierWidth(kOrder[l], fine);
    if (!w) continue;
    const int64_t a = CeilTo(start, *w);
    const int64_t b = FloorTo(end, *w);
    if (a < b) {
      Decompose(start, a, fine, l + 1, out);
      out->push_back({kOrder[l], a, b});
      Decompose(b, end, fine, l + 1, out);
      return;
    }
  }
}

}  // namespace

std::vector<WindowPiece> DecomposeWindow(int64_t start, int64_t end, int64_t fine_width) {
  std::vector<WindowPiece> out;
  Decompose(start, end, fine_width, 0, &out);
  return out;
}

Coverage CoverWindow(TimeRange asked, int64_t width, int64_t data_end) {
  Coverage c;
  // Start: the nearest boundary, the earlier one on a tie.
  const int64_t s_down = FloorTo(asked.start, width);
  c.scan_begin = asked.start - s_down <= s_down + width - asked.start ? s_down : s_down + width;
  c.covered.start = c.scan_begin;
  // End: down to the boundary, or through the bucket holding it, which then
  // covers up to the newest event (but at least to the end asked).
  const int64_t e_down = FloorTo(asked.end, width);
  if (e_down == asked.end) {
    c.scan_end = c.covered.end = asked.end;
  } else {
    const int64_t e_up = e_down + width;
    const int64_t through = std::max(asked.end, std::min(e_up, data_end));
    if (through == asked.end || through - asked.end < asked.end - e_down) {
      c.scan_end = e_up;
      c.covered.end = through;
    } else {
      c.scan_end = c.covered.end = e_down;
    }
  }
  if (c.scan_end < c.scan_begin) c.scan_end = c.scan_begin;
  if (c.covered.end < c.covered.start) c.covered.end = c.covered.start;
  c.rounded = !(c.covered == asked);
  return c;
}

Coverage ApplyRetention(Coverage c, int64_t fine_width, const TierRetention& retention, int64_t now) {
  auto widen = [&](int64_t kept, int64_t width, int64_t fine) {
    if (kept <= 0 || fine >= width) return;
    if (c.scan_begin < now - kept) {
      const int64_t b = FloorTo(c.scan_begin, width);
      if (b != c.scan_begin) c.rounded = true;
      c.scan_begin = c.covered.start = b;
    }
    if (c.scan_end < now - kept) {
      const int64_t e = CeilTo(c.scan_end, width);
      if (e != c.covered.end) c.rounded = true;
      c.scan_end = c.covered.end = e;
    }
  };
  widen(retention.fine, kHourSeconds, fine_width);
  widen(retention.hour, kDaySeconds, std::max(fine_width, kHourSeconds));
  if (retention.day > 0) {
    // Compaction drops a day once it ends more than `day` ago; the day
    // holding now - day is always kept.
    const int64_t oldest = FloorTo(now - retention.day, kDaySeconds);
    if (c.scan_begin < oldest) {
      c.scan_begin = c.covered.start = oldest;
      c.rounded = true;
      if (c.scan_end < c.scan_begin) c.scan_end = c.scan_begin;
      if (c.covered.end < c.covered.start) c.covered.end = c.covered.start;
    }
  }
  return c;
}

}  // namespace kpistream::kpi
