// kpictl's output for people and for scripts: values in their unit, times
// in and out, tables, CSV, and status colours on a terminal.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::tools {

// A KPI value in its unit, to `digits` significant digits (at least the
// integer part): percent "2.27 %", currency "13,012.94", ratio "3.2",
// seconds "850 ms" / "1.2 s" / "3.5 min" / "2.1 h" / "4.5 d", count and
// score "1,234" (decimals only when not whole). No value: "-".
std::string FormatValue(std::optional<double> v, std::string_view unit, int digits = 4);

// A time given as RFC 3339 ("2026-11-30T06:00:00Z"), unix seconds, "now", or
// relative to now ("-1h", "-30m", "+5m"), in unix seconds. INVALID_ARGUMENT
// says which forms are accepted.
[[nodiscard]] absl::StatusOr<int64_t> ParseTime(std::string_view text, int64_t now_s);
// RFC 3339 in UTC, seconds precision.
std::string FormatTime(int64_t unix_s);

// A table: a header row and rows, columns left-aligned and padded.
std::string Table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
// CSV (RFC 4180): fields with a comma, quote or newline are quoted.
std::string Csv(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// A status word coloured with ANSI escapes (excellent blue, good green,
// warning yellow, critical red) when `color`; else as is.
std::string ColorStatus(std::string_view status, bool color);

}  // namespace kpistream::tools
