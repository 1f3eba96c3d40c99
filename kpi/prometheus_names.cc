#include "kpi/prometheus_names.h"

namespace kpistream::kpi {

std::string_view UnitSuffix(std::string_view unit) {
  if (unit == "ratio") return "_ratio";
  if (unit == "percent") return "_percent";
  if (unit == "seconds") return "_seconds";
  if (unit == "currency") return "_currency";
  return "";
}

std::string KpiMetricName(const KpiDef& kpi) {
  const auto suffix = UnitSuffix(kpi.unit);
  std::string name = "kpistream_kpi_" + kpi.name;
  if (!suffix.empty() && !std::string_view(name).ends_with(suffix)) name += suffix;
  return name;
}

std::string BreakdownLabel(const ExportSpec& spec) {
  std::string out;
  for (const auto& d : spec.group_by) out += (out.empty() ? "" : ",") + d;
  return out;
}

}  // namespace kpistream::kpi
