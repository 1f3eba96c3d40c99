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
//       time: event_time          # the timestamp the event is filed under
//   kpis:
//     ctr:
//       help: Click-through rate
//       unit: ratio               # ratio | percent | currency | seconds | count
//       formula: clicks / impressions
//       windows: [5m, 1h, 24h]
//
// The full syntax, and what each choice means for the numbers, is in
// docs/KPIS.md.
//
// Thread-safety: immutable after loading.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/event.h"
#include "kpi/expr.h"
#include "kpi/filter.h"
#include "kpi/window.h"
#include "state/aggregate.h"
#include "state/store.h"

namespace google::protobuf {
class FieldDescriptor;
}

namespace kpistream::kpi {

enum class Aggregation : uint8_t { kCount, kSum, kMin, kMax, kAvg, kDistinct, kQuantile, kLast };
std::string_view AggregationName(Aggregation a);
// The stored partial kind of an aggregation.
state::ValueKind PartialKind(Aggregation a);

// Traffic-light bands of a KPI (as in the seeds' dashboards): the KPI's status
// against its target (served as "status"; not an error status).
enum class Band : uint8_t { kUnknown = 0, kCritical, kWarning, kGood, kExcellent };
std::string_view BandName(Band s);

struct Target {
  bool higher_is_better = true;
  // Thresholds, the floor of each band, at least one set. Higher is
  // better: value >= excellent -> excellent, >= good -> good, >= warning ->
  // warning, anything worse than the lowest threshold -> critical. Lower is
  // better: the same with <=. `critical`, as written in the KPI file, names
  // the same edge as `warning` (the least acceptable value; the reader sets
  // warning from it); kept to report the file's own words.
  std::optional<double> excellent, good, warning, critical;
  Band Classify(std::optional<double> v) const;
};

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
  std::vector<int> group_dims;  // indices into Catalog::dimensions, like group_by
  // The finest bucket as declared, and as stored: refined to divide the
  // catalog zone's alignment (kpi/window.h, StorageBucket), so calendar
  // windows in the zone fall on bucket boundaries.
  int64_t declared_bucket_seconds = 60;
  int64_t bucket_seconds = 60;
  // Attribution: the timestamp field whose time the event is filed (and
  // windowed) under, e.g. a conversion under its trial's start for a cohort
  // rate; empty: event_time. Lateness is judged on event_time either way.
  std::string time_field;
  const google::protobuf::FieldDescriptor* time_desc = nullptr;
  // Events older than (partition's newest event time - lateness) are late.
  int64_t lateness_ms = 3600 * 1000;
  // Distinct values each group-by dimension keeps per partition (the
  // smallest of the measures grouping by the dimension applies; see
  // DimensionDef); more go to "__other__".
  uint32_t max_groups = 10000;
  std::shared_ptr<const Filter> filter;  // null: every event of the types
};

// A dimension of a family that some measure groups by. Which of its values
// are kept (the first max_values seen on a partition) is decided once per
// partition for every measure grouping by it, so the measures of a KPI
// always agree on its groups; values beyond go to "__other__".
// The smallest max_dimension_bytes: a cut value keeps at least 15 bytes of
// its own before its 17-byte hash suffix (ingest/router.h).
inline constexpr size_t kMinDimensionBytes = 32;

struct DimensionDef {
  Family family = Family::kCampaign;
  std::string name;
  uint32_t max_values = 10000;
};

// One input of a KPI formula: a measure over a window, or the number of
// groups of one of its dimensions whose value reaches a threshold.
struct KpiInput {
  int measure = -1;       // index into Catalog::measures
  std::string window;     // its own window; empty: the KPI's window
  std::string group_dim;  // groups_at_least: the dimension counted
  double threshold = 0;   // groups_at_least: the minimum value
  bool operator==(const KpiInput&) const = default;
};

// A breakdown of a KPI exported on /metrics: its value per group of
// `group_by` (dimensions of the KPI), the `top` groups by value (highest
// first; lowest with `ascending`) and one "__other__" group for the rest, so
// the groups add up to the whole. top 0: at most kMaxExportGroups groups.
struct ExportSpec {
  std::vector<std::string> group_by;
  size_t top = 0;
  bool ascending = false;
};
inline constexpr size_t kMaxExportGroups = 100;

struct KpiDef {
  std::string name;
  std::string help;
  std::string unit;
  std::string formula;
  std::vector<std::string> windows;
  Expr expr;  // refs index `inputs`; KPI refs and constants inlined
  std::vector<KpiInput> inputs;
  std::vector<int> measures;  // distinct measures of the inputs
  std::optional<Target> target;
  // Breakdowns exported on /metrics (`export:`), besides the ungrouped value.
  std::vector<ExportSpec> exports;
  // The dashboards the KPI is shown on (`dashboards:`, e.g. [executive,
  // marketing]; kpictl dashboards makes one per name).
  std::vector<std::string> dashboards;
};

// An alert rule (in the catalog's `alerts:` section; see docs/ALERTS.md).
enum class AlertKind : uint8_t {
  kThreshold,  // the KPI's value against a number, or its target band
  kChange,     // relative change against the same window `compare_to` earlier
  kAnomaly,    // robust z-score against the same window in past periods
  kAbsence,    // no event of a family (or of any) for a duration
  kFreshness,  // newest applied event older than a bound
};
std::string_view AlertKindName(AlertKind k);
enum class CompareOp : uint8_t { kGt, kGe, kLt, kLe };
bool Compare(CompareOp op, double lhs, double rhs);
std::string_view CompareOpName(CompareOp op);

struct AlertRule {
  std::string name;
  AlertKind kind = AlertKind::kThreshold;
  int kpi = -1;  // index into Catalog::kpis (threshold, change, anomaly)
  std::string window;
  std::string group_by;  // one alert instance per group
  std::vector<std::pair<std::string, std::string>> filter;
  // Threshold and change: value `op` threshold (change: a fraction, -0.2 =
  // a 20 % drop).
  CompareOp op = CompareOp::kGt;
  double threshold = 0;
  // Threshold from the KPI's target: fires when the status is this band or
  // worse (kWarning: warning or critical).
  std::optional<Band> target_band;
  int64_t compare_to_s = 0;  // change
  // Anomaly: the same window ending period_s * i earlier, i = 1..periods;
  // fires when |value - median| > k * 1.4826 * MAD (a robust standard
  // deviation), in the direction asked, and by at least min_delta.
  int64_t period_s = 7 * 86400;
  int periods = 4;
  double k = 3;
  int direction = 0;  // 0 both, 1 up only, -1 down only
  double min_delta = 0;
  std::optional<Family> family;  // absence: null = any family
  int64_t max_age_s = 0;         // absence and freshness
  int64_t for_s = 0;
  int64_t keep_firing_for_s = 0;
  std::string severity = "warning";  // critical | high | warning | info
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;  // templates
};

struct Catalog {
  std::vector<MeasureDef> measures;
  std::vector<DimensionDef> dimensions;  // every (family, dimension) of a group_by
  std::vector<KpiDef> kpis;
  std::vector<AlertRule> alerts;
  std::string timezone = "UTC";            // IANA name, for calendar windows
  int64_t zone_alignment_seconds = 86400;  // kpi/window.h, ZoneAlignment(timezone)
  // Dimension values longer than this are cut to it (kept distinct by a
  // hash suffix) at ingest, so no value can blow up a key or an answer.
  size_t max_dimension_bytes = 256;         // >= kMinDimensionBytes
  std::map<std::string, double> constants;  // usable by name in formulas
  // Funnels for generated dashboards: dashboard name -> KPIs (indices into
  // kpis), from the top of the funnel down.
  std::map<std::string, std::vector<int>> funnels;

  const MeasureDef* FindMeasure(std::string_view name) const;
  const KpiDef* FindKpi(std::string_view name) const;
  // Dimensions shared by every measure of the KPI (usable for group-by/filter).
  std::vector<std::string> KpiDimensions(const KpiDef& kpi) const;
};

// Stable ids, in a state store, of a catalog's measures and dimensions,
// indexed like Catalog::measures and Catalog::dimensions. Bound by name, so
// editing or reordering the catalog never mixes series; bound outside the
// catalog, which stays immutable.
struct StateIds {
  std::vector<uint32_t> measures;
  std::vector<uint32_t> dimensions;
  // Measures whose stored shape changed since they were first stored: one
  // message each, for the log (state::Store::SeriesIdFor).
  std::vector<std::string> reshaped;
};
// What a measure's partials are stored as: "aggregation|group_by|bucket
// seconds". A measure keeps its series while its shape stays.
std::string MeasureShape(const MeasureDef& m);
[[nodiscard]] absl::StatusOr<StateIds> BindStateIds(const Catalog& catalog, state::Store* store);

// Parses a catalog. `filename` prefixes every error ("file:line:col: what").
[[nodiscard]] absl::StatusOr<Catalog> ParseCatalog(std::string_view yaml_text, std::string_view filename);
[[nodiscard]] absl::StatusOr<Catalog> LoadCatalogFile(const std::string& path);

// The default catalog compiled into the binaries (config/kpis.yaml).
std::string_view DefaultCatalogYaml();

}  // namespace kpistream::kpi
