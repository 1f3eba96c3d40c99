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
  // Grouped answers' order, and the page: groups [offset, offset + limit).
  enum class Order { kGroup, kValueDescending, kValueAscending };
  Order order = Order::kGroup;
  size_t limit = 0;  // 0: every group
  size_t offset = 0;
};

// Orders a grouped answer as the plan asks and cuts its page; *next is the
// token of the next page ("" when this is the last).
void OrderAndPage(const GetKpiPlan& plan, const v1::GetKpiRequest& req, std::vector<query::GroupValue>* values,
                  std::string* next);

// now_s: the end of the window when the request has no end_time.
[[nodiscard]] absl::StatusOr<GetKpiPlan> PlanGetKpi(const v1::GetKpiRequest& req, const kpi::Catalog& catalog,
                                                    int64_t now_s);

struct RangePlan {
  query::KpiQuery query;
  int64_t step = 0;    // seconds
  int64_t window = 0;  // seconds; 0: tumbling
};

[[nodiscard]] absl::StatusOr<RangePlan> PlanQueryRange(const v1::QueryRangeRequest& req, const kpi::Catalog& catalog);

}  // namespace kpistream::api
