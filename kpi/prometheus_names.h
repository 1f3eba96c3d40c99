// How a KPI is named on /metrics, for kpid's exporter and for what is
// generated from the catalog (Grafana dashboards, Prometheus rules): one
// definition, so they always agree.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "kpi/catalog.h"

namespace kpistream::kpi {

// The unit's suffix per Prometheus' naming guide (base units; a ratio is
// _ratio): ratio -> "_ratio", percent -> "_percent", seconds -> "_seconds",
// currency -> "_currency"; count and score have none.
std::string_view UnitSuffix(std::string_view unit);

// kpistream_kpi_<name> with its unit's suffix (not repeated if the name
// ends with it): kpistream_kpi_ctr_ratio, kpistream_kpi_conversions. Labels:
// window, and for an exported breakdown `breakdown` (its dimensions joined
// by ",") and one label per dimension.
std::string KpiMetricName(const KpiDef& kpi);

// The `breakdown` label's value for an export's dimensions.
std::string BreakdownLabel(const ExportSpec& spec);

}  // namespace kpistream::kpi
