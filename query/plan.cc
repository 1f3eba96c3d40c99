#include "query/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace kpistream::query {

namespace {

int DimIndex(const kpi::MeasureDef& m, const std::string& dim) {
  for (size_t i = 0; i < m.group_by.size(); ++i) {
    if (m.group_by[i] == dim) return static_cast<int>(i);
  }
  return -1;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "none" : out;
}

kpi::Coverage Cover(kpi::TimeRange r, int64_t width, const PlanTime& t) {
  return kpi::ApplyRetention(kpi::CoverWindow(r, width, t.data_end), width, t.retention, t.now);
}

// Maps the query's group-by and filter dimensions onto a measure's group
// key; false when the measure lacks one of them.
bool MapDimensions(const kpi::MeasureDef& m, const KpiQuery& q, InputPlan* in) {
  in->group_index.clear();
  in->filter.clear();
  for (const auto& d : q.group_by) {
    const int i = DimIndex(m, d);
    if (i < 0) return false;
    in->group_index.push_back(i);
  }
  for (const auto& [d, v] : q.filter) {
    const int i = DimIndex(m, d);
    if (i < 0) return false;
    in->filter.emplace_back(i, v);
  }
  return true;
}

// group_by and filter name dimensions of the KPI, each once.
absl::Status CheckDimensions(const kpi::Catalog& catalog, const kpi::KpiDef& kpi, const KpiQuery& q) {
  const auto dims = catalog.KpiDimensions(kpi);
  auto known = [&](const std::string& d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  for (size_t i = 0; i < q.group_by.size(); ++i) {
    if (!known(q.group_by[i])) {
      return absl::InvalidArgumentError(
          fmt::format("KPI '{}' cannot be grouped by '{}' (dimensions: {})", q.kpi, q.group_by[i], Join(dims)));
    }
    if (std::find(q.group_by.begin(), q.group_by.begin() + static_cast<std::ptrdiff_t>(i), q.group_by[i]) !=
        q.group_by.begin() + static_cast<std::ptrdiff_t>(i)) {
      return absl::InvalidArgumentError(fmt::format("group_by lists '{}' twice", q.group_by[i]));
    }
  }
  for (const auto& [k, v] : q.filter) {
    if (!known(k)) {
      return absl::InvalidArgumentError(
          fmt::format("KPI '{}' cannot be filtered on '{}' (dimensions: {})", q.kpi, k, Join(dims)));
    }
  }
  return absl::OkStatus();
}

// The sibling measures of a grouped query (plan.h, QueryPlan::domain).
void PlanDomain(const kpi::Catalog& catalog, const kpi::StateIds& ids, const KpiQuery& q, const PlanTime& time,
                QueryPlan* plan_out) {
  QueryPlan& plan = *plan_out;
  const kpi::KpiDef* kpi = plan.kpi;
  std::vector<kpi::Family> families;
  std::vector<int> used;
  for (const auto& in : kpi->inputs) {
    const auto& m = catalog.measures[static_cast<size_t>(in.measure)];
    if (std::find(families.begin(), families.end(), m.family) == families.end()) families.push_back(m.family);
    if (in.window.empty()) used.push_back(in.measure);
  }
  for (size_t mi = 0; mi < catalog.measures.size(); ++mi) {
    const auto& m = catalog.measures[mi];
    // Siblings with cheap partials (33 bytes: count, sum, min, max, avg).
    if (std::find(families.begin(), families.end(), m.family) == families.end() ||
        kpi::PartialKind(m.aggregation) != state::ValueKind::kAgg ||
        std::find(used.begin(), used.end(), static_cast<int>(mi)) != used.end()) {
      continue;
    }
    InputPlan p;
    p.measure = static_cast<int>(mi);
    p.measure_id = ids.measures[mi];
    if (!MapDimensions(m, q, &p)) continue;
    p.coverage = Cover({plan.coverage.covered.start, plan.coverage.covered.end}, m.bucket_seconds, time);
    p.pieces = kpi::DecomposeWindow(p.coverage.scan_begin, p.coverage.scan_end, m.bucket_seconds);
    plan.domain.push_back(std::move(p));
  }
}

}  // namespace

int64_t KpiResolution(const kpi::Catalog& catalog, const kpi::KpiDef& kpi) {
  int64_t width = 1;
  for (const auto& in : kpi.inputs) {
    if (!in.window.empty()) continue;
    width = std::lcm(width, catalog.measures[static_cast<size_t>(in.measure)].bucket_seconds);
  }
  return width;
}

absl::StatusOr<QueryPlan> PlanQuery(const kpi::Catalog& catalog, const kpi::StateIds& ids, const KpiQuery& q,
                                    const PlanTime& time, bool allow_empty_window) {
  const kpi::KpiDef* kpi = catalog.FindKpi(q.kpi);
  if (kpi == nullptr) {
    return absl::NotFoundError(fmt::format("unknown KPI '{}' (ListKpis shows the catalog)", q.kpi));
  }
  // A calendar window at its first instant ("today" at midnight) is empty,
  // not an error: it has no data yet.
  if (q.end < q.start || (q.end == q.start && !allow_empty_window)) {
    return absl::InvalidArgumentError(fmt::format("window end ({}) must be after its start ({})", q.end, q.start));
  }
  if (auto st = CheckDimensions(catalog, *kpi, q); !st.ok()) return st;
  QueryPlan plan;
  plan.kpi = kpi;
  plan.coverage = Cover({q.start, q.end}, KpiResolution(catalog, *kpi), time);
  const kpi::Coverage kpi_window = plan.coverage;
  for (const auto& in : kpi->inputs) {
    const auto& m = catalog.measures[static_cast<size_t>(in.measure)];
    InputPlan p;
    p.measure = in.measure;
    p.measure_id = ids.measures[static_cast<size_t>(in.measure)];
    if (in.window.empty()) {
      // Every input on the KPI's window reads the same interval, unless
      // retention widened this measure's edges: the answer then covers the
      // union, and says so.
      p.coverage = kpi::ApplyRetention(kpi_window, m.bucket_seconds, time.retention, time.now);
      auto& covered = plan.coverage.covered;
      covered.start = std::min(covered.start, p.coverage.covered.start);
      covered.end = std::max(covered.end, p.coverage.covered.end);
    } else {
      auto r = kpi::ResolveWindow(in.window, q.end, catalog.timezone);
      if (!r.ok()) return r.status();
      p.coverage = Cover(*r, m.bucket_seconds, time);
    }
    // An input on a window of its own (x[30d]) reports nothing of its
    // interval but whether it is exact: any input read rounded makes the
    // answer rounded.
    plan.coverage.rounded = plan.coverage.rounded || p.coverage.rounded;
    p.pieces = kpi::DecomposeWindow(p.coverage.scan_begin, p.coverage.scan_end, m.bucket_seconds);
    if (!in.group_dim.empty()) {
      p.count_index = DimIndex(m, in.group_dim);
      p.threshold = in.threshold;
    } else if (!MapDimensions(m, q, &p)) {
      // KpiDimensions holds only dimensions of every measure; impossible.
      return absl::InternalError(fmt::format("measure '{}' lacks a dimension of KPI '{}'", m.name, q.kpi));
    }
    plan.inputs.push_back(std::move(p));
  }
  if (!q.group_by.empty()) PlanDomain(catalog, ids, q, time, &plan);
  return plan;
}

}  // namespace kpistream::query
