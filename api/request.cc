#include "api/request.h"

#include <fmt/format.h>

#include <algorithm>

#include "absl/strings/numbers.h"

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

// A page token names the request it belongs to (a hash of the request
// without its token) and the offset of the page's first group:
// "<offset>.<hash hex>". A token from another request is refused, rather
// than paging through a different answer.
std::string RequestHash(const v1::GetKpiRequest& req) {
  v1::GetKpiRequest r = req;
  r.clear_page_token();
  std::string bytes;
  r.SerializeToString(&bytes);  // deterministic enough within one kpid version
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;  // FNV-1a
  return fmt::format("{:016x}", h);
}

absl::Status ParsePage(const v1::GetKpiRequest& req, GetKpiPlan* plan) {
  if (req.limit() < 0) return absl::InvalidArgumentError("limit must be >= 0");
  plan->limit = static_cast<size_t>(req.limit());
  if (req.order_by().empty() || req.order_by() == "group") {
    plan->order = GetKpiPlan::Order::kGroup;
  } else if (req.order_by() == "value") {
    plan->order = GetKpiPlan::Order::kValueDescending;
  } else if (req.order_by() == "-value") {
    plan->order = GetKpiPlan::Order::kValueAscending;
  } else {
    return absl::InvalidArgumentError(
        fmt::format("order_by \"{}\": use value (highest first), -value (lowest first) or group", req.order_by()));
  }
  if (req.page_token().empty()) return absl::OkStatus();
  const auto dot = req.page_token().find('.');
  size_t offset = 0;
  if (dot == std::string::npos || req.page_token().substr(dot + 1) != RequestHash(req) ||
      !absl::SimpleAtoi(req.page_token().substr(0, dot), &offset)) {
    return absl::InvalidArgumentError(
        "page_token does not belong to this request: repeat the request that returned it, changing only page_token");
  }
  plan->offset = offset;
  return absl::OkStatus();
}

}  // namespace

void OrderAndPage(const GetKpiPlan& plan, const v1::GetKpiRequest& req, std::vector<query::GroupValue>* values,
                  std::string* next) {
  next->clear();
  if (plan.order != GetKpiPlan::Order::kGroup) {
    const bool desc = plan.order == GetKpiPlan::Order::kValueDescending;
    std::stable_sort(values->begin(), values->end(), [desc](const query::GroupValue& a, const query::GroupValue& b) {
      if (a.value.has_value() != b.value.has_value()) return a.value.has_value();  // no value last
      if (!a.value) return false;
      return desc ? *a.value > *b.value : *a.value < *b.value;
    });
  }
  if (plan.limit == 0 && plan.offset == 0) return;
  const size_t begin = std::min(plan.offset, values->size());
  const size_t end = plan.limit == 0 ? values->size() : std::min(values->size(), begin + plan.limit);
  if (end < values->size()) *next = fmt::format("{}.{}", end, RequestHash(req));
  values->erase(values->begin() + static_cast<std::ptrdiff_t>(end), values->end());
  values->erase(values->begin(), values->begin() + static_cast<std::ptrdiff_t>(begin));
}

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
  if (auto st = ParsePage(req, &plan); !st.ok()) return st;
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
  if (!req.window().empty()) {
    auto window = kpi::ParseDuration(req.window());
    if (!window.ok()) {
      return absl::InvalidArgumentError(fmt::format("window \"{}\": a rolling duration such as 24h ({})", req.window(),
                                                    std::string(window.status().message())));
    }
    plan.window = *window;
  }
  plan.query.kpi = req.kpi();
  plan.query.start = req.start_time().seconds();
  plan.query.end = req.end_time().seconds();
  if (auto st = ParseGroupBy(req.group_by(), &plan.query); !st.ok()) return st;
  CopyFilter(req.filter(), &plan.query);
  return plan;
}

}  // namespace kpistream::api
