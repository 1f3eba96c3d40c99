#include "kpi/alert_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

namespace kpistream::kpi {

namespace {

// Calls on_text for literal runs and on_var for each {{ $name }}; returns
// an error for an unterminated or unknown placeholder.
template <typename Text, typename Var>
absl::Status WalkTemplate(std::string_view t, Text on_text, Var on_var) {
  while (!t.empty()) {
    const size_t open = t.find("{{");
    if (open == std::string_view::npos) {
      on_text(t);
      break;
    }
    on_text(t.substr(0, open));
    const size_t close = t.find("}}", open);
    if (close == std::string_view::npos) return absl::InvalidArgumentError("'{{' without a closing '}}'");
    std::string_view name = t.substr(open + 2, close - open - 2);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    static constexpr std::string_view kVars[] = {"$value",  "$threshold", "$baseline", "$kpi",
                                                 "$window", "$unit",      "$severity"};
    const bool known = std::find(std::begin(kVars), std::end(kVars), name) != std::end(kVars) ||
                       (name.starts_with("$labels.") && name.size() > 8);
    if (!known) {
      return absl::InvalidArgumentError(
          fmt::format("unknown placeholder '{{{{ {} }}}}' (use $value, $threshold, "
                      "$baseline, $kpi, $window, $unit, $severity or $labels.NAME)",
                      name));
    }
    on_var(name);
    t.remove_prefix(close + 2);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckAlertTemplate(std::string_view text) {
  return WalkTemplate(
      text, [](std::string_view) {}, [](std::string_view) {});
}

std::string FormatAlertValue(std::optional<double> v) {
  if (!v) return "n/a";
  return fmt::format("{:.4g}", *v);
}

std::string ExpandAlertTemplate(std::string_view text, const TemplateData& d) {
  std::string out;
  auto st = WalkTemplate(
      text, [&](std::string_view s) { out += s; },
      [&](std::string_view name) {
        if (name == "$value") {
          out += FormatAlertValue(d.value);
        } else if (name == "$threshold") {
          out += FormatAlertValue(d.threshold);
        } else if (name == "$baseline") {
          out += FormatAlertValue(d.baseline);
        } else if (name == "$kpi") {
          out += d.kpi;
        } else if (name == "$window") {
          out += d.window;
        } else if (name == "$unit") {
          out += d.unit;
        } else if (name == "$severity") {
          out += d.severity;
        } else {
          auto it = d.labels.find(std::string(name.substr(8)));
          if (it != d.labels.end()) out += it->second;
        }
      });
  if (!st.ok()) return std::string(text);  // checked at load; never here
  return out;
}

std::optional<double> AlertThreshold(const AlertRule& r, const KpiDef* kpi) {
  switch (r.kind) {
    case AlertKind::kThreshold:
      if (r.target_band && kpi && kpi->target) {
        const auto& t = *kpi->target;
        if (*r.target_band == Band::kWarning) return t.good ? t.good : t.warning;
        return t.warning;
      }
      return r.threshold;
    case AlertKind::kChange:
      return r.threshold * 100;
    case AlertKind::kAnomaly:
      return r.k;
    case AlertKind::kAbsence:
    case AlertKind::kFreshness:
      return static_cast<double>(r.max_age_s);
  }
  return std::nullopt;
}

}  // namespace kpistream::kpi
