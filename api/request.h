// Validation of the query API's requests (kpistream.v1 GetKpi and
// QueryRange), turning each into a KpiQuery. The gRPC service only maps the
// result to a status; keeping the checks here lets the unit tests and the
// request fuzzer (tools/fuzz/request_fuzz.cc) reach every one of them
// without a server.
//
// Errors: NOT_FOUND for an unknown KPI, INVALID_ARGUMENT with what to fix
// for everything else. Query-time checks (group-by and filter dimensions,
// the point limit of a range) are QueryEngine's.
//
// Thread-safety: free functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "kpistream/v1/kpi.pb.h"
#include "query/query.h"

namespace kpistream::api {

struct GetKpiPlan {
  query::KpiQuery query;
  std::string window;  // as asked, or the KPI's first window
  const kpi::KpiDef* kpi = nullptr;
};

// now_s: the end of the window when the request has no end_time.
[[nodiscard]] absl::StatusOr<GetKpiPlan> PlanGetKpi(const v1::GetKpiRequest& req, const kpi::Catalog& catalog,
                                                    int64_t now_s);

struct RangePlan {
  query::KpiQuery query;
  int64_t step = 0;  // seconds
};

[[nodiscard]] absl::StatusOr<RangePlan> PlanQueryRange(const v1::QueryRangeRequest& req, const kpi::Catalog& catalog);

}  // namespace kpistream::api
