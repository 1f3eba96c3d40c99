// Evaluation: a plan's partials, read from one snapshot, merged per group
// and input, and the KPI's formula evaluated per group.
//
// Thread-safety: free functions; the snapshot must be safe to read.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "query/partial_source.h"
#include "query/plan.h"
#include "query/query.h"
#include "state/aggregate.h"

namespace kpistream::query {

// The value of a measure from its merged partial (null when there was no
// data); q is the quantile for quantile measures. count, sum and distinct
// are 0 without data; the others have no value.
std::optional<double> MeasureValue(const kpi::MeasureDef& m, const state::Partial* p, double q);

// Groups are listed in the order of their label values.
[[nodiscard]] absl::StatusOr<std::vector<GroupValue>> Evaluate(const kpi::Catalog& catalog, const KpiQuery& q,
                                                               const QueryPlan& plan, const PartialSnapshot& snapshot);

}  // namespace kpistream::query
