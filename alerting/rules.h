// The pure parts of alerting: the per-instance state machine (Prometheus'
// semantics: pending -> firing after `for`, resolved after the condition has
// been false for `keep_firing_for`), the conditions, annotation templates and
// instance fingerprints. No clock, no I/O: the evaluator in services/ feeds
// them, which keeps them testable with a fake clock.
//
// Thread-safety: free functions on caller-owned values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "kpi/catalog.h"

namespace kpistream::alerting {

enum class AlertState : uint8_t { kInactive = 1, kPending = 2, kFiring = 3, kResolved = 4 };
std::string_view AlertStateName(AlertState s);

// One (rule, group) instance. Times are milliseconds on the rule clock.
struct AlertInstance {
  AlertState state = AlertState::kInactive;
  std::optional<double> value;
  int64_t active_since_ms = 0;
  int64_t firing_since_ms = 0;
  int64_t resolved_at_ms = 0;
  int64_t last_true_ms = 0;
  int64_t last_evaluated_ms = 0;
};

// Advances an instance by one evaluation at now_ms where the condition is
// `active`. Returns the previous state when the state changed.
std::optional<AlertState> StepAlert(const kpi::AlertRule& rule, bool active, std::optional<double> value,
                                    int64_t now_ms, AlertInstance* inst);

// The outcome of a rule's condition for one group.
struct ConditionResult {
  bool active = false;
  std::optional<double> value;     // shown as $value
  std::optional<double> baseline;  // change: the earlier value; anomaly: the median
};

// Threshold (value op threshold, or the KPI's status at or below the band).
ConditionResult EvalThreshold(const kpi::AlertRule& rule, const kpi::KpiDef& kpi, std::optional<double> value);
// Change: (now - before) / |before|, no value when before is 0 or absent.
ConditionResult EvalChange(const kpi::AlertRule& rule, std::optional<double> now, std::optional<double> before);
// Anomaly: robust z-score of `now` against `history` (absent points skipped;
// fewer than 2 points: never active).
ConditionResult EvalAnomaly(const kpi::AlertRule& rule, std::optional<double> now, const std::vector<double>& history);
// Absence and freshness: seconds since the newest event (no event ever: the
// condition holds once the engine has been ready for max_age).
ConditionResult EvalAge(const kpi::AlertRule& rule, std::optional<double> age_s);

// 64-bit hash of sorted labels, as 16 hex digits; identifies an instance.
std::string AlertFingerprint(const std::map<std::string, std::string>& labels);

}  // namespace kpistream::alerting
