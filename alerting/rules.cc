#include "alerting/rules.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace kpistream::alerting {

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

std::optional<AlertState> StepAlert(const kpi::AlertRule& rule, bool active, std::optional<double> value,
                                    int64_t now_ms, int64_t gap_ms, AlertInstance* inst) {
  const AlertState before = inst->state;
  if (gap_ms > 0) {
    // The gap's time counts for nothing: move the clocks it would have run
    // forward by its length.
    if (inst->state == AlertState::kPending) inst->active_since_ms += gap_ms;
    if (inst->state == AlertState::kFiring) inst->last_true_ms = std::min(now_ms, inst->last_true_ms + gap_ms);
  }
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

ConditionResult EvalThreshold(const kpi::AlertRule& rule, const kpi::KpiDef& kpi, std::optional<double> value) {
  ConditionResult r{.value = value};
  if (!value) return r;
  if (rule.target_band) {
    if (!kpi.target) return r;
    const kpi::Band s = kpi.target->Classify(value);
    r.active = s != kpi::Band::kUnknown && static_cast<int>(s) <= static_cast<int>(*rule.target_band);
    return r;
  }
  r.active = kpi::Compare(rule.op, *value, rule.threshold);
  return r;
}

ConditionResult EvalChange(const kpi::AlertRule& rule, std::optional<double> now, std::optional<double> before) {
  ConditionResult r{.baseline = before};
  if (!now || !before || *before == 0) return r;
  r.value = (*now - *before) / std::fabs(*before);
  r.active = kpi::Compare(rule.op, *r.value, rule.threshold);
  return r;
}

namespace {
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
}  // namespace

ConditionResult EvalAnomaly(const kpi::AlertRule& rule, std::optional<double> now, const std::vector<double>& history) {
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

ConditionResult EvalAge(const kpi::AlertRule& rule, std::optional<double> age_s) {
  ConditionResult r{.value = age_s};
  r.active = age_s && *age_s > static_cast<double>(rule.max_age_s);
  return r;
}

std::string AlertFingerprint(const std::map<std::string, std::string>& labels) {
  bool has_nul = false;
  for (const auto& [k, v] : labels) has_nul |= k.find('\0') != std::string::npos || v.find('\0') != std::string::npos;
  std::string flat;
  if (!has_nul) {
    // name NUL value NUL ...: unambiguous while no label holds a NUL (and
    // what fingerprints have always been, so identities survive upgrades).
    for (const auto& [k, v] : labels) {
      flat += k;
      flat.push_back('\0');
      flat += v;
      flat.push_back('\0');
    }
  } else {
    // Length-prefixed, after a byte no label name can start with.
    flat.push_back('\x01');
    for (const auto& [k, v] : labels) fmt::format_to(std::back_inserter(flat), "{}:{}{}:{}", k.size(), k, v.size(), v);
  }
  return fmt::format("{:016x}", XXH3_64bits(flat.data(), flat.size()));
}

}  // namespace kpistream::alerting
