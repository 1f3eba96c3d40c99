#include <fmt/format.h>

#include <map>

#include "kpi/prometheus_names.h"
#include "services/metrics.h"
#include "services/utf8.h"

namespace kpistream::services {

namespace prom = prometheus;

namespace {

const auto G = prom::MetricType::Gauge;

// One exported query: the KPI over a window, ungrouped or by a breakdown.
struct Exported {
  std::vector<std::string> group_by;
  std::string breakdown;
  size_t top = 0;
  bool ascending = false;
};

}  // namespace

KpiExport::KpiExport(const kpi::Catalog& catalog, const query::QueryService& queries, const state::Clock& clock,
                     int64_t min_interval_ms, std::function<bool()> active)
    : catalog_(catalog),
      queries_(queries),
      clock_(clock),
      min_interval_ms_(min_interval_ms),
      active_(std::move(active)),
      thread_([this] { Run(); }) {}

KpiExport::~KpiExport() { Stop(); }

void KpiExport::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KpiExport::OnCommit() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
}

void KpiExport::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (active_) {
      cv_.wait_for(l, std::chrono::milliseconds(min_interval_ms_), [this] { return stop_ || dirty_; });
    } else {
      cv_.wait(l, [this] { return stop_ || dirty_; });
    }
    if (stop_) break;
    dirty_ = false;
    if (active_ && !active_()) {
      cached_.reset();  // a later term starts from a fresh evaluation
      continue;
    }
    l.unlock();
    auto fresh = std::make_shared<MetricFamilies>();
    {
      // Published before eval_mu_ is let go (mu_ inside it, as Collect
      // takes them): a first Collect waiting for this evaluation finds it.
      std::lock_guard<std::mutex> e(eval_mu_);
      Evaluate(fresh.get());
      l.lock();
      cached_ = std::move(fresh);
    }
    // At most one evaluation per interval, however often commits come.
    cv_.wait_for(l, std::chrono::milliseconds(min_interval_ms_), [this] { return stop_; });
  }
}

void KpiExport::Collect(MetricFamilies* out) const {
  if (active_) {
    const bool exporting = active_();
    AddGauge(out, "kpistream_kpi_exporter",
             "1 on the replica that exports the KPI series (cluster-wide values); 0 on the others, which export none.",
             exporting ? 1 : 0);
    if (!exporting) return;
  }
  std::shared_ptr<const MetricFamilies> cached;
  {
    std::lock_guard<std::mutex> l(mu_);
    cached = cached_;
  }
  if (!cached) {
    // Before the first evaluation: make one here (the thread's, if it is
    // under way, is waited for by eval_mu_ and then reused).
    std::lock_guard<std::mutex> e(eval_mu_);
    {
      std::lock_guard<std::mutex> l(mu_);
      cached = cached_;
    }
    if (!cached) {
      auto fresh = std::make_shared<MetricFamilies>();
      Evaluate(fresh.get());
      std::lock_guard<std::mutex> l(mu_);
      if (!cached_) cached_ = fresh;
      cached = cached_;
    }
  }
  out->insert(out->end(), cached->begin(), cached->end());
}

void KpiExport::Evaluate(MetricFamilies* out) const {
  const auto t0 = std::chrono::steady_clock::now();
  auto status = Family("kpistream_kpi_status",
                       "KPI status against its target, one series per status (StateSet): 1 for the KPI's status, 0 "
                       "for the others; ungrouped values with a target only.",
                       G);
  auto inputs = Family("kpistream_kpi_input",
                       "The additive parts (count and sum measures) of each exported KPI value, per group, so that "
                       "ratios can be re-aggregated in PromQL: sum(numerator) / sum(denominator).",
                       G);
  uint64_t errors = 0, series = 0;
  const int64_t now = (clock_.NowMs() + 999) / 1000;
  // Every query first, then one batch: the whole export reads one
  // snapshot (with replicas, one read of each peer).
  std::vector<query::KpiQuery> batch;
  for (int pass = 0; pass < 2; ++pass) {
    size_t next = 0;
    auto answers = pass == 1 ? queries_.GetBatch(batch)
                             : absl::StatusOr<std::vector<absl::StatusOr<query::KpiAnswer>>>(
                                   std::vector<absl::StatusOr<query::KpiAnswer>>{});
    for (const auto& k : catalog_.kpis) {
      auto f = Family(kpi::KpiMetricName(k),
                      fmt::format("{} Unit: {}.{}", k.help.empty() ? k.name : k.help, k.unit,
                                  k.exports.empty() ? "" : " Breakdowns: the `breakdown` label names the dimensions."),
                      G);
      std::vector<Exported> queries{{}};
      for (const auto& e : k.exports) {
        queries.push_back({e.group_by, kpi::BreakdownLabel(e), e.top > 0 ? e.top : kpi::kMaxExportGroups, e.ascending});
      }
      for (const auto& w : k.windows) {
        auto range = kpi::ResolveWindow(w, now, catalog_.timezone);
        if (!range.ok()) continue;
        for (const auto& e : queries) {
          query::KpiQuery q{.kpi = k.name, .start = range->start, .end = range->end, .group_by = e.group_by};
          q.top = e.top;
          q.top_ascending = e.ascending;
          if (pass == 0) {
            batch.push_back(std::move(q));
            continue;
          }
          const size_t at = next++;
          // An answer lacking partitions (a rebalance, a replica gone) is
          // not exported: an absent sample, never a partial value as whole.
          if (!answers.ok() || !(*answers)[at].ok() || !(*answers)[at]->missing_partitions.empty()) {
            ++errors;
            continue;
          }
          const auto& answer = (*answers)[at];
          for (const auto& gv : answer->values) {
            MetricLabels labels{{"window", w}};
            if (!e.group_by.empty()) labels.push_back({"breakdown", e.breakdown});
            // Label values must be UTF-8 in the exposition; dimension values
            // are bytes from the events.
            for (const auto& [d, v] : gv.group) labels.push_back({d, ValidUtf8(v)});
            // No value (e.g. a ratio over zero events) is an absent sample.
            if (gv.value) {
              f.metric.push_back(Sample(*gv.value, G, labels));
              ++series;
            }
            for (size_t i = 0; i < k.inputs.size() && i < gv.inputs.size(); ++i) {
              const auto& in = k.inputs[i];
              const auto agg = catalog_.measures[static_cast<size_t>(in.measure)].aggregation;
              if (!in.group_dim.empty() || (agg != kpi::Aggregation::kCount && agg != kpi::Aggregation::kSum)) continue;
              if (!gv.inputs[i]) continue;
              auto il = labels;
              il.push_back({"kpi", k.name});
              il.push_back({"input", catalog_.measures[static_cast<size_t>(in.measure)].name +
                                         (in.window.empty() ? "" : "[" + in.window + "]")});
              inputs.metric.push_back(Sample(*gv.inputs[i], G, std::move(il)));
              ++series;
            }
            if (k.target && e.group_by.empty()) {
              const auto band = k.target->Classify(gv.value);
              if (band == kpi::Band::kUnknown) continue;
              for (const auto b :
                   {kpi::Band::kCritical, kpi::Band::kWarning, kpi::Band::kGood, kpi::Band::kExcellent}) {
                status.metric.push_back(Sample(
                    band == b ? 1 : 0, G, {{"kpi", k.name}, {"status", std::string(kpi::BandName(b))}, {"window", w}}));
                ++series;
              }
            }
          }
        }
      }
      if (pass == 1) out->push_back(std::move(f));
    }
  }
  auto target = Family("kpistream_kpi_target",
                       "The floor of each band of a KPI's target (the ceiling when lower is better), in the KPI's "
                       "unit: for Grafana thresholds.",
                       G);
  for (const auto& k : catalog_.kpis) {
    if (!k.target) continue;
    const std::string direction = k.target->higher_is_better ? "higher" : "lower";
    for (const auto& [band, v] : {std::pair{"excellent", k.target->excellent}, std::pair{"good", k.target->good},
                                  std::pair{"warning", k.target->warning}}) {
      if (v) target.metric.push_back(Sample(*v, G, {{"band", band}, {"direction", direction}, {"kpi", k.name}}));
    }
  }
  out->push_back(std::move(status));
  out->push_back(std::move(inputs));
  out->push_back(std::move(target));
  AddGauge(out, "kpistream_kpi_query_errors",
           "KPI evaluations that failed (or lacked partitions, with replicas) in the last export.",
           static_cast<double>(errors));
  AddGauge(out, "kpistream_kpi_series", "KPI series (values, parts and statuses) in the last export.",
           static_cast<double>(series));
  AddGauge(out, "kpistream_kpi_export_duration_seconds",
           "How long the last export of every KPI took (evaluated after commits, at most once per interval).",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace kpistream::services
