// GetKpi's answer, built once for every RPC that returns one (GetKpi,
// BatchGetKpis, WatchKpis): plan the request (api/request.h), evaluate it
// (query::QueryService), order and page the groups, and fill the response
// with its coverage, freshness and consistency token.
//
// Thread-safety: free functions; the view's objects are safe to read
// concurrently.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/request.h"
#include "kpistream/v1/kpi.pb.h"
#include "query/query.h"
#include "services/grpc_server.h"
#include "state/clock.h"

namespace kpistream::services {

// The committed state an answer reflects (GetKpiResponse.consistency_token),
// one entry per partition, sorted, comma-separated: with replicas
// "<topic>[<partition>]@<replica>=<next offset>" (which replica answered for
// it); on a single node "<topic id>/<partition>=<next offset>".
std::string ConsistencyToken(const std::vector<query::PartitionPosition>& positions);

// Fills resp from an evaluated answer of the plan.
void FillGetKpiResponse(const api::GetKpiPlan& plan, const v1::GetKpiRequest& req, query::KpiAnswer answer,
                        int64_t now_ms, v1::GetKpiResponse* resp);

// The whole GetKpi: errors as api::PlanGetKpi and QueryService::Get return
// them (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, OUT_OF_RANGE).
[[nodiscard]] absl::Status AnswerGetKpi(const ServingView& view, const state::Clock& clock,
                                        const v1::GetKpiRequest& req, v1::GetKpiResponse* resp);

// BatchGetKpis: every query from one snapshot. The error is the request's
// own (too many queries); each query's error is in its result.
[[nodiscard]] absl::Status AnswerBatch(const ServingView& view, const state::Clock& clock,
                                       const v1::BatchGetKpisRequest& req, size_t max_batch,
                                       v1::BatchGetKpisResponse* resp);

}  // namespace kpistream::services
