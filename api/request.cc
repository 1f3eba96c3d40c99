#include "api/request.h"

#include <fmt/format.h>

#include <algorithm>

namespace kpistream::api {

namespace {

// Valid timestamps: 1970 .. 2200. Anything else is a client error.
bool ValidTime(const google::protobuf::Timestamp& t) {
  return t.seconds() >= 0 && t.seconds() < 7258118400 && t.nanos() >= 0 && t.nanos() <= 999999999;
}

void CopyFilter(const google::protobuf::Map<std::string, std::string>& in, query::KpiQuery* q) {
  for (const auto& [k, v] : in) q->filter.emplace_back(k, v);
  // Map order is unspecified; queries (and their caches) want one order.
  std::sort(q->filter.begin(), q->filter.end());
}

// "channel, region" -> {"channel", "region"}.
absl::Status ParseGroupBy(std::string_view text, query::KpiQuery* q) {
  q->group_by.clear();
  size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view d = text.substr(pos, comma - pos);
    while (!d.empty() && d.front() == ' ') d.remove_prefix(1);
    while (!d.empty() && d.back() == ' ') d.remove_suffix(1);
    if (d.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("group_by \"{}\": list dimensions separated by commas, e.g. \"channel, region\"", text));
    }
    q->group_by.emplace_back(d);
    pos = comma + 1;
  }
  if (q->group_by.size() > 8) return absl::InvalidArgumentError("group_by takes at most 8 dimensions");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GetKpiPlan> PlanGetKpi(const v1::GetKpiRequest& req, const kpi::Catalog& catalog, int64_t now_s) {
  if (req.kpi().empty()) return absl::InvalidArgumentError("kpi is required (ListKpis shows the catalog)");
  GetKpiPlan plan;
  plan.kpi = catalog.FindKpi(req.kpi());
  if (plan.kpi == nullptr) {
    return absl::NotFoundError(fmt::format("unknown KPI '{}' (ListKpis shows the catalog)", req.kpi()));
  }
  plan.window = req.window().empty() ? plan.kpi->windows.front() : req.window();
  int64_t end_s = now_s;
  if (req.has_end_time()) {
    if (!ValidTime(req.end_time())) return absl::InvalidArgumentError("end_time must be between 1970 and 2200");
    // A window ends after the instant asked for.
    end_s = req.end_time().seconds() + (req.end_time().nanos() > 0 ? 1 : 0);
  }
  auto range = kpi::ResolveWindow(plan.window, end_s, catalog.timezone);
  if (!range.ok()) return range.status();
  plan.query.kpi = req.kpi();
  plan.query.start = range->start;
  plan.query.end = range->end;
  if (auto st = ParseGroupBy(req.group_by(), &plan.query); !st.ok()) return st;
  CopyFilter(req.filter(), &plan.query);
  return plan;
}

absl::StatusOr<RangePlan> PlanQueryRange(const v1::QueryRangeRequest& req, const kpi::Catalog& catalog) {
  if (req.kpi().empty()) return absl::InvalidArgumentError("kpi is required (ListKpis shows the catalog)");
  if (catalog.FindKpi(req.kpi()) == nullptr) {
    return absl::NotFoundError(fmt::format("unknown KPI '{}' (ListKpis shows the catalog)", req.kpi()));
  }
  if (!req.has_start_time() || !req.has_end_time()) {
    return absl::InvalidArgumentError("start_time and end_time are required");
  }
  if (!ValidTime(req.start_time()) || !ValidTime(req.end_time())) {
    return absl::InvalidArgumentError("start_time and end_time must be between 1970 and 2200");
  }
  if (req.step().empty()) return absl::InvalidArgumentError("step is required, e.g. \"1m\"");
  auto step = kpi::ParseDuration(req.step());
  if (!step.ok()) return step.status();
  RangePlan plan;
  plan.step = *step;
  plan.query.kpi = req.kpi();
  plan.query.start = req.start_time().seconds();
  plan.query.end = req.end_time().seconds();
  if (auto st = ParseGroupBy(req.group_by(), &plan.query); !st.ok()) return st;
  CopyFilter(req.filter(), &plan.query);
  return plan;
}

}  // namespace kpistream::api
