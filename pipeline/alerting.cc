#include "pipeline/alerting.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace kpistream::pipeline {

std::string_view AlertStateName(AlertState s) {
  switch (s) {
    case AlertState::kInactive:
      return "inactive";
    case AlertState::kPending:
      return "pending";
    case AlertState::kFiring:
      return "firing";
    case AlertState::kResolved:
      return "resolved";
  }
  return "?";
}

std::optional<AlertState> StepAlert(const AlertRule& rule, bool active, std::optional<double> value, int64_t now_ms,
                                    AlertInstance* inst) {
  const AlertState before = inst->state;
  inst->value = value;
  inst->last_evaluated_ms = now_ms;
  if (active) inst->last_true_ms = now_ms;
  switch (inst->state) {
    case AlertState::kInactive:
    case AlertState::kResolved:
      if (!active) break;
      // A new episode: resolved instances start over.
      inst->state = AlertState::kPending;
      inst->active_since_ms = now_ms;
      inst->firing_since_ms = 0;
      inst->resolved_at_ms = 0;
      [[fallthrough]];
    case AlertState::kPending:
      if (!active) {
        inst->state = AlertState::kInactive;
        break;
      }
      if (now_ms - inst->active_since_ms >= rule.for_s * 1000) {
        inst->state = AlertState::kFiring;
        inst->firing_since_ms = now_ms;
      }
      break;
    case AlertState::kFiring:
      if (!active && now_ms - inst->last_true_ms >= rule.keep_firing_for_s * 1000) {
        inst->state = AlertState::kResolved;
        inst->resolved_at_ms = now_ms;
      }
      break;
  }
  if (inst->state == before) return std::nullopt;
  return before;
}

ConditionResult EvalThreshold(const AlertRule& rule, const KpiDef& kpi, std::optional<double> value) {
  ConditionResult r{.value = value};
  if (!value) return r;
  if (rule.target_band) {
    if (!kpi.target) return r;
    const Status s = kpi.target->Classify(value);
    r.active = s != Status::kUnknown && static_cast<int>(s) <= static_cast<int>(*rule.target_band);
    return r;
  }
  r.active = Compare(rule.op, *value, rule.threshold);
  return r;
}

ConditionResult EvalChange(const AlertRule& rule, std::optional<double> now, std::optional<double> before) {
  ConditionResult r{.baseline = before};
  if (!now || !before || *before == 0) return r;
  r.value = (*now - *before) / std::fabs(*before);
  r.active = Compare(rule.op, *r.value, rule.threshold);
  return r;
}

namespace {
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
}  // namespace

ConditionResult EvalAnomaly(const AlertRule& rule, std::optional<double> now, const std::vector<double>& history) {
  ConditionResult r{.value = now};
  if (!now || history.size() < 2) return r;
  const double median = Median(history);
  std::vector<double> dev;
  dev.reserve(history.size());
  for (double h : history) dev.push_back(std::fabs(h - median));
  // 1.4826 * MAD estimates the standard deviation of normal data; a flat
  // history (MAD 0) would make any change infinitely anomalous, so the
  // spread is at least 1 % of the median's size (and min_delta decides).
  const double sigma = std::max(1.4826 * Median(dev), 0.01 * std::fabs(median));
  r.baseline = median;
  const double delta = *now - median;
  if (std::fabs(delta) < rule.min_delta || (rule.direction > 0 && delta <= 0) || (rule.direction < 0 && delta >= 0)) {
    return r;
  }
  r.active = sigma > 0 ? std::fabs(delta) > rule.k * sigma : delta != 0;
  return r;
}

ConditionResult EvalAge(const AlertRule& rule, std::optional<double> age_s) {
  ConditionResult r{.value = age_s};
  r.active = age_s && *age_s > static_cast<double>(rule.max_age_s);
  return r;
}

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

std::string AlertFingerprint(const std::map<std::string, std::string>& labels) {
  std::string flat;
  for (const auto& [k, v] : labels) {
    flat += k;
    flat.push_back('\0');
    flat += v;
    flat.push_back('\0');
  }
  return fmt::format("{:016x}", XXH3_64bits(flat.data(), flat.size()));
}

}  // namespace kpistream::pipeline
