// Alert annotation templates: text with {{ $value }} and friends, checked
// when the KPI file is loaded and expanded by the alert evaluator.
//
// Thread-safety: free functions on caller-owned values.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kpi/catalog.h"

namespace kpistream::kpi {

// Annotation templates: text with {{ $value }}, {{ $threshold }},
// {{ $baseline }}, {{ $kpi }}, {{ $window }}, {{ $unit }}, {{ $severity }}
// and {{ $labels.NAME }}.
absl::Status CheckAlertTemplate(std::string_view text);
struct TemplateData {
  std::optional<double> value, threshold, baseline;
  std::string kpi, window, unit, severity;
  std::map<std::string, std::string> labels;
};
std::string ExpandAlertTemplate(std::string_view text, const TemplateData& data);
// The number a rule's {{ $threshold }} shows: the threshold (a change rule's
// in percent), the target's edge for a target rule (good for `warning`,
// warning for `critical`), k for an anomaly rule, the age bound in seconds
// for absence and freshness rules. kpi: the rule's KPI, or null.
std::optional<double> AlertThreshold(const AlertRule& r, const KpiDef* kpi);
// Numbers in annotations: up to 4 significant digits, "n/a" without a value.
std::string FormatAlertValue(std::optional<double> v);

}  // namespace kpistream::kpi
