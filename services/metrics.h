// /metrics, cut per component: each Collect* function turns one
// component's probe or state into Prometheus metric families at scrape time
// (nothing goes through prometheus-cpp's Family::Add, slow at runtime), in
// a file of its own (metrics_<component>.cc). services/http_server.h serves
// what they collect.
//
// Thread-safety: the functions only read their component (each documents
// its reads as safe from any thread).
#pragma once

#include <prometheus/metric_family.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/engine.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "state/clock.h"
#include "state/store.h"

namespace kpistream::services {

using MetricFamilies = std::vector<prometheus::MetricFamily>;

using MetricLabels = std::vector<prometheus::ClientMetric::Label>;
// A family, a sample of it, and one-sample families.
prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type);
prometheus::ClientMetric Sample(double value, prometheus::MetricType type, MetricLabels labels = {});
void AddCounter(MetricFamilies* out, const char* name, const char* help, double value);
void AddGauge(MetricFamilies* out, const char* name, const char* help, double value);

// kpistream_build_info{version,revision} 1, as Prometheus' own build_info.
void CollectBuildInfo(MetricFamilies* out);
// The Kafka engine and the per-record step: records in, applied, rejected
// by reason, late, overflowing and cut values, lag, freshness, commits.
void CollectEngine(const ingest::Engine& engine, const kpi::Catalog& catalog, const state::Clock& clock,
                   MetricFamilies* out);
// The state store: sizes, memory, compactions.
void CollectStore(const state::Store& store, MetricFamilies* out);
// The query layer: the result cache.
void CollectQueries(const query::QueryService& queries, MetricFamilies* out);
// Alerts: Prometheus' ALERTS and ALERTS_FOR_STATE series, the evaluator's
// and (when set) the notifier's counters.
void CollectAlerting(const alerting::Alerter& alerter, const alerting::Notifier* notifier, MetricFamilies* out);

// KPI values over each KPI's default windows, with their status. Evaluated
// at most once per commit and second, and shared by every scraper (several
// Prometheus replicas, dashboards): each evaluation scans the store.
// Thread-safety: Collect and OnCommit from any thread.
class KpiExport {
 public:
  // REQUIRES: catalog, queries and clock outlive the export.
  KpiExport(const kpi::Catalog& catalog, const query::QueryService& queries, const state::Clock& clock)
      : catalog_(catalog), queries_(queries), clock_(clock) {}
  void OnCommit() { commits_.fetch_add(1, std::memory_order_relaxed); }
  void Collect(MetricFamilies* out) const;

 private:
  void Evaluate(MetricFamilies* out) const;
  const kpi::Catalog& catalog_;
  const query::QueryService& queries_;
  const state::Clock& clock_;
  std::atomic<uint64_t> commits_{0};
  mutable std::mutex mu_;
  mutable MetricFamilies cached_;                   // guarded by mu_
  mutable uint64_t cached_commits_ = ~uint64_t{0};  // guarded by mu_
  mutable int64_t cached_second_ = 0;               // guarded by mu_
};

}  // namespace kpistream::services
