// The KPI catalog: measures (what to aggregate from which events) and KPIs
// (formulas over measures), loaded from YAML.
//
//   measures:
//     clicks:
//       family: campaign          # campaign | product | crm
//       types: [click]            # event types (enum names without prefix)
//       aggregation: count        # count | sum | min | max | avg | distinct
//       field: cost               # numeric field (sum/min/max/avg) or
//                                 # string field (distinct)
//       group_by: [channel]       # dimensions kept for group-by / filter
//       bucket: 1m                # finest bucket width (default 1m)
//   kpis:
//     ctr:
//       help: Click-through rate
//       unit: ratio               # ratio | percent | currency | seconds | count
//       formula: clicks / impressions
//       windows: [5m, 1h, 24h]
//
// Thread-safety: immutable after loading.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "pipeline/event.h"
#include "pipeline/expr.h"

namespace google::protobuf {
class FieldDescriptor;
}

namespace kpistream::pipeline {

enum class Aggregation : uint8_t { kCount, kSum, kMin, kMax, kAvg, kDistinct };
std::string_view AggregationName(Aggregation a);

struct MeasureDef {
  std::string name;
  Family family = Family::kCampaign;
  std::vector<int> types;  // enum numbers; empty = every type of the family
  std::vector<std::string> type_names;
  Aggregation aggregation = Aggregation::kCount;
  std::string field;
  const google::protobuf::FieldDescriptor* field_desc = nullptr;  // null for count
  std::vector<std::string> group_by;
  std::vector<const google::protobuf::FieldDescriptor*> group_by_desc;
  int64_t bucket_seconds = 60;
  // Stable id in the state store (assigned by the engine at start).
  uint32_t id = 0;
};

struct KpiDef {
  std::string name;
  std::string help;
  std::string unit;
  std::string formula;
  std::vector<std::string> windows;
  Expr expr;
  std::vector<int> measures;  // indices into Catalog::measures
};

struct Catalog {
  std::vector<MeasureDef> measures;
  std::vector<KpiDef> kpis;

  const MeasureDef* FindMeasure(std::string_view name) const;
  const KpiDef* FindKpi(std::string_view name) const;
  // Dimensions shared by every measure of the KPI (usable for group-by/filter).
  std::vector<std::string> KpiDimensions(const KpiDef& kpi) const;
};

// Parses a catalog. `filename` prefixes every error ("file:line:col: what").
[[nodiscard]] absl::StatusOr<Catalog> ParseCatalog(std::string_view yaml_text, std::string_view filename);
[[nodiscard]] absl::StatusOr<Catalog> LoadCatalogFile(const std::string& path);

// The default catalog compiled into the binaries (config/kpis.yaml).
std::string_view DefaultCatalogYaml();

// Durations: "30s", "5m", "1h", "24h", "7d". Returns seconds.
[[nodiscard]] absl::StatusOr<int64_t> ParseDuration(std::string_view text);
// A window: a duration, or "all" (everything since the epoch) -> kAllTime.
inline constexpr int64_t kAllTime = -1;
[[nodiscard]] absl::StatusOr<int64_t> ParseWindow(std::string_view text);

}  // namespace kpistream::pipeline
