#include "tools/kpictl/format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"

namespace kpistream::tools {

namespace {

// "1234567.891" -> "1,234,567.891".
std::string Grouped(const std::string& s) {
  const auto dot = s.find('.');
  const size_t int_end = dot == std::string::npos ? s.size() : dot;
  const size_t first = (!s.empty() && s[0] == '-') ? 1 : 0;
  std::string out = s.substr(0, first);
  for (size_t i = first; i < int_end; ++i) {
    if (i > first && (int_end - i) % 3 == 0) out.push_back(',');
    out.push_back(s[i]);
  }
  out.append(s, int_end, std::string::npos);
  return out;
}

// Significant digits, but never fewer than the integer part, no trailing zeros.
std::string Digits(double v, int digits, int max_decimals = 6) {
  const double a = std::fabs(v);
  int decimals = a >= 1 ? std::max(0, digits - 1 - static_cast<int>(std::floor(std::log10(a)))) : digits;
  decimals = std::min(decimals, max_decimals);
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

}  // namespace

std::string FormatValue(std::optional<double> v, std::string_view unit, int digits) {
  if (!v) return "-";
  const double x = *v;
  if (unit == "percent") return Digits(x, digits) + " %";
  if (unit == "ratio") return Digits(x, digits);
  if (unit == "currency") return Grouped(fmt::format("{:.2f}", x));
  if (unit == "seconds") {
    const double a = std::fabs(x);
    if (a < 1 && a > 0) return Digits(x * 1000, 3) + " ms";
    if (a < 120) return Digits(x, 3) + " s";
    if (a < 7200) return Digits(x / 60, 3) + " min";
    if (a < 2 * 86400) return Digits(x / 3600, 3) + " h";
    return Digits(x / 86400, 3) + " d";
  }
  // count, score
  if (x == std::floor(x) && std::fabs(x) < 1e15) return Grouped(fmt::format("{:.0f}", x));
  return Grouped(Digits(x, digits));
}

absl::StatusOr<int64_t> ParseTime(std::string_view text, int64_t now_s) {
  if (text == "now") return now_s;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    absl::Duration d;
    if (absl::ParseDuration(std::string(text.substr(1)), &d)) {
      const int64_t s = absl::ToInt64Seconds(d);
      return text[0] == '-' ? now_s - s : now_s + s;
    }
  } else {
    int64_t unix_s = 0;
    if (absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &unix_s)) return unix_s;
    absl::Time t;
    std::string err;
    if (absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) return absl::ToUnixSeconds(t);
  }
  return absl::InvalidArgumentError(fmt::format(
      "time '{}': use RFC 3339 (2026-11-30T06:00:00Z), unix seconds, now, or relative (-1h, -30m, +5m)", text));
}

std::string FormatTime(int64_t unix_s) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_s), absl::UTCTimeZone());
}

namespace {
// Display width: bytes that do not continue a UTF-8 character, minus the
// ANSI colour escapes.
size_t Width(std::string_view s) {
  size_t w = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++w;
  }
  return w;
}
}  // namespace

std::string Table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) widths[c] = Width(header[c]);
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < widths.size(); ++c) widths[c] = std::max(widths[c], Width(r[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cells.size(); ++c) {
      l += cells[c];
      if (c + 1 < cells.size()) l += std::string(widths[c] - Width(cells[c]) + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return out;
}

std::string Csv(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  auto field = [](const std::string& f) {
    if (f.find_first_of(",\"\n\r") == std::string::npos) return f;
    std::string q = "\"";
    for (char c : f) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) out += (c ? "," : "") + field(cells[c]);
    out += "\r\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return out;
}

std::string ColorStatus(std::string_view status, bool color) {
  if (!color) return std::string(status);
  const char* code = status == "excellent"  ? "34"
                     : status == "good"     ? "32"
                     : status == "warning"  ? "33"
                     : status == "critical" ? "31"
                                            : nullptr;
  if (!code) return std::string(status);
  return fmt::format("\x1b[{}m{}\x1b[0m", code, status);
}

}  // namespace kpistream::tools
