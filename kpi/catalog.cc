#include "kpi/catalog.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>

namespace kpistream::kpi {

namespace pb = google::protobuf;

std::string_view AggregationName(Aggregation a) {
  switch (a) {
    case Aggregation::kCount:
      return "count";
    case Aggregation::kSum:
      return "sum";
    case Aggregation::kMin:
      return "min";
    case Aggregation::kMax:
      return "max";
    case Aggregation::kAvg:
      return "avg";
    case Aggregation::kDistinct:
      return "distinct";
    case Aggregation::kQuantile:
      return "quantile";
    case Aggregation::kLast:
      return "last";
  }
  return "?";
}

state::ValueKind PartialKind(Aggregation a) {
  switch (a) {
    case Aggregation::kDistinct:
      return state::ValueKind::kHll;
    case Aggregation::kQuantile:
      return state::ValueKind::kSketch;
    case Aggregation::kLast:
      return state::ValueKind::kLast;
    default:
      return state::ValueKind::kAgg;
  }
}

std::string_view AlertKindName(AlertKind k) {
  switch (k) {
    case AlertKind::kThreshold:
      return "threshold";
    case AlertKind::kChange:
      return "change";
    case AlertKind::kAnomaly:
      return "anomaly";
    case AlertKind::kAbsence:
      return "absence";
    case AlertKind::kFreshness:
      return "freshness";
  }
  return "?";
}

bool Compare(CompareOp op, double lhs, double rhs) {
  switch (op) {
    case CompareOp::kGt:
      return lhs > rhs;
    case CompareOp::kGe:
      return lhs >= rhs;
    case CompareOp::kLt:
      return lhs < rhs;
    case CompareOp::kLe:
      return lhs <= rhs;
  }
  return false;
}

std::string_view CompareOpName(CompareOp op) {
  switch (op) {
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
  }
  return "?";
}

std::string_view BandName(Band s) {
  switch (s) {
    case Band::kUnknown:
      return "unknown";
    case Band::kCritical:
      return "critical";
    case Band::kWarning:
      return "warning";
    case Band::kGood:
      return "good";
    case Band::kExcellent:
      return "excellent";
  }
  return "unknown";
}

Band Target::Classify(std::optional<double> v) const {
  if (!v) return Band::kUnknown;
  auto at_least = [&](const std::optional<double>& t) { return t && (higher_is_better ? *v >= *t : *v <= *t); };
  if (!warning && !good && !excellent) return Band::kUnknown;
  if (at_least(excellent)) return Band::kExcellent;
  if (at_least(good)) return Band::kGood;
  if (at_least(warning)) return Band::kWarning;
  return Band::kCritical;
}

const MeasureDef* Catalog::FindMeasure(std::string_view name) const {
  for (const auto& m : measures) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

const KpiDef* Catalog::FindKpi(std::string_view name) const {
  for (const auto& k : kpis) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

std::vector<std::string> Catalog::KpiDimensions(const KpiDef& kpi) const {
  std::vector<std::string> dims;
  bool first = true;
  for (const auto& in : kpi.inputs) {
    if (!in.group_dim.empty()) return {};  // counts groups: not groupable itself
  }
  for (int mi : kpi.measures) {
    const auto& gb = measures[mi].group_by;
    if (first) {
      dims = gb;
      first = false;
      continue;
    }
    std::erase_if(dims, [&](const std::string& d) { return std::find(gb.begin(), gb.end(), d) == gb.end(); });
  }
  return dims;
}

std::string MeasureShape(const MeasureDef& m) {
  return fmt::format("{}|{}|{}", AggregationName(m.aggregation), fmt::join(m.group_by, ","), m.bucket_seconds);
}

absl::StatusOr<StateIds> BindStateIds(const Catalog& catalog, state::Store* store) {
  StateIds ids;
  for (const auto& m : catalog.measures) {
    const auto shape = MeasureShape(m);
    auto series = store->SeriesIdFor("measure", m.name, shape);
    if (!series.ok()) return series.status();
    ids.measures.push_back(series->id);
    if (series->first_shape != shape) {
      ids.reshaped.push_back(fmt::format(
          "measure {} is stored as {} (aggregation|group_by|bucket seconds) but was first stored as {}: its "
          "values start anew under the new shape; the old ones stay, under the old shape",
          m.name, shape, series->first_shape));
    }
    // Hour- or day-wide finest buckets have no coarser roll-up: keep them
    // as long as that tier.
    if (m.bucket_seconds % state::kDaySeconds == 0) {
      store->SetFineTier(series->id, state::Tier::kDay);
    } else if (m.bucket_seconds % state::kHourSeconds == 0) {
      store->SetFineTier(series->id, state::Tier::kHour);
    } else {
      store->SetFineTier(series->id, state::Tier::kFine);
    }
  }
  for (const auto& d : catalog.dimensions) {
    auto id = store->IdFor("dimension", fmt::format("{}.{}", FamilyName(d.family), d.name));
    if (!id.ok()) return id.status();
    ids.dimensions.push_back(*id);
  }
  return ids;
}

}  // namespace kpistream::kpi
