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
//
// A gap is time the rule was not evaluated (kpid down or replaying, a
// quiet topic under the event-time clock, a jump in event time): what the
// condition was then is unknown, so the gap counts for nothing, neither as
// "held" nor as "cleared". The pending time accumulated before the gap is
// kept and `for` needs the rest after it (Prometheus restores `for` state
// after an outage the same way); a firing alert's keep_firing_for counts
// only time after the gap; an alert that fired stays one episode. gap_ms:
// the time since the last evaluation when it exceeds the evaluation
// interval by more than the allowed slack (the caller decides), else 0.
std::optional<AlertState> StepAlert(const kpi::AlertRule& rule, bool active, std::optional<double> value,
                                    int64_t now_ms, int64_t gap_ms, AlertInstance* inst);

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
// Label names and values may hold any byte: distinct label sets always give
// distinct inputs to the hash.
std::string AlertFingerprint(const std::map<std::string, std::string>& labels);

// An alert as the evaluator serves it. Labels and annotations are raw
// bytes (a dimension value can hold any byte); the services make them valid
// UTF-8 for their wire formats.
struct Alert {
  std::string rule;
  std::map<std::string, std::string> labels;  // alertname, severity, kpi, the rule's labels, the group
  std::map<std::string, std::string> annotations;
  AlertState state = AlertState::kInactive;
  std::optional<double> value;
  // On the rule clock (wall or event time).
  int64_t active_since_ms = 0;  // pending since
  int64_t firing_since_ms = 0;
  int64_t resolved_at_ms = 0;
  int64_t last_true_ms = 0;
  int64_t last_evaluated_ms = 0;
  // On the wall clock, fixed when the alert fired and when it resolved:
  // Alertmanager's startsAt and endsAt, the same on every resend and after
  // restarts.
  int64_t starts_at_ms = 0;
  int64_t ends_at_ms = 0;
  std::string fingerprint;
  bool resolution_delivered = false;
};

struct AlertTransition {
  uint64_t sequence = 0;
  AlertState from = AlertState::kInactive;
  Alert alert;  // with the new state
};

}  // namespace kpistream::alerting
