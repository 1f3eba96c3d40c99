#include <fmt/format.h>

#include "services/metrics.h"

namespace kpistream::services {

namespace prom = prometheus;

void KpiExport::Collect(MetricFamilies* out) const {
  const uint64_t commits = commits_.load(std::memory_order_relaxed);
  const int64_t second = clock_.NowSeconds();
  std::lock_guard<std::mutex> lock(mu_);
  if (commits != cached_commits_ || second != cached_second_) {
    cached_.clear();
    Evaluate(&cached_);
    cached_commits_ = commits;
    cached_second_ = second;
  }
  out->insert(out->end(), cached_.begin(), cached_.end());
}

void KpiExport::Evaluate(MetricFamilies* out) const {
  auto f = Family("kpistream_kpi_value", "Current KPI value over each of its default windows (see ListKpis for units).",
                  prom::MetricType::Gauge);
  auto status = Family("kpistream_kpi_status",
                       "KPI status against its target: 0 critical, 1 warning, 2 good, 3 excellent (KPIs with a "
                       "target and a value only).",
                       prom::MetricType::Gauge);
  const int64_t now = (clock_.NowMs() + 999) / 1000;
  uint64_t errors = 0;
  for (const auto& k : catalog_.kpis) {
    for (const auto& w : k.windows) {
      auto range = kpi::ResolveWindow(w, now, catalog_.timezone);
      if (!range.ok()) continue;
      query::KpiQuery q;
      q.kpi = k.name;
      q.start = range->start;
      q.end = range->end;
      auto answer = queries_.Get(q);
      if (!answer.ok()) {
        ++errors;
        continue;
      }
      for (const auto& gv : answer->values) {
        // No value (e.g. a ratio over zero events) is an absent sample.
        if (!gv.value) continue;
        f.metric.push_back(
            Sample(*gv.value, prom::MetricType::Gauge, {{"kpi", k.name}, {"unit", k.unit}, {"window", w}}));
        if (k.target && k.target->Classify(gv.value) != kpi::Band::kUnknown) {
          const auto st = k.target->Classify(gv.value);
          status.metric.push_back(Sample(static_cast<double>(static_cast<int>(st) - 1), prom::MetricType::Gauge,
                                         {{"kpi", k.name}, {"window", w}}));
        }
      }
    }
  }
  out->push_back(std::move(status));
  out->push_back(std::move(f));
  auto e =
      Family("kpistream_kpi_query_errors", "KPI evaluations that failed during this scrape.", prom::MetricType::Gauge);
  e.metric.push_back(Sample(static_cast<double>(errors), prom::MetricType::Gauge));
  out->push_back(std::move(e));
}

}  // namespace kpistream::services
