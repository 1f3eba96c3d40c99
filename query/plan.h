// A query's plan: for each input of the KPI's formula, which measure, which
// buckets (and what interval they cover), and how its group keys map onto
// the query's group-by and filter. Pure: no store access.
//
// Thread-safety: free functions and plain values.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "kpi/window.h"
#include "query/query.h"

namespace kpistream::query {

struct InputPlan {
  int measure = -1;  // index into Catalog::measures
  uint32_t measure_id = 0;
  kpi::Coverage coverage;
  std::vector<kpi::WindowPiece> pieces;  // the buckets to read
  // For each of the query's group_by dimensions, its index in the measure's
  // group key; for each filter, (index, value).
  std::vector<int> group_index;
  std::vector<std::pair<int, std::string>> filter;
  // groups_at_least: the index of the dimension counted, and the threshold.
  int count_index = -1;
  double threshold = 0;
};

struct QueryPlan {
  const kpi::KpiDef* kpi = nullptr;
  std::vector<InputPlan> inputs;  // indexed like kpi->inputs
  // Grouped queries: other measures of the same families, grouping by the
  // query's dimensions, read for their groups only, so that a count of
  // nothing is listed as 0 and related KPIs list the same groups.
  std::vector<InputPlan> domain;
  kpi::Coverage coverage;  // of the KPI's own window
};

// The time context of a plan.
struct PlanTime {
  int64_t data_end = 0;  // one past the newest event time stored, seconds (kpi::CoverWindow)
  int64_t now = 0;       // the clock, seconds (retention)
  kpi::TierRetention retention;
};

// Errors: NOT_FOUND for an unknown KPI; INVALID_ARGUMENT with what to fix
// for a window whose end is before its start, an unknown group-by or filter
// dimension, or a bad own window of an input.
[[nodiscard]] absl::StatusOr<QueryPlan> PlanQuery(const kpi::Catalog& catalog, const kpi::StateIds& ids,
                                                  const KpiQuery& q, const PlanTime& time, bool allow_empty_window);

// The KPI's window's resolution: the least common multiple of the buckets of
// the inputs that use the KPI's window (all such inputs read the same
// interval).
int64_t KpiResolution(const kpi::Catalog& catalog, const kpi::KpiDef& kpi);

}  // namespace kpistream::query
