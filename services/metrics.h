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
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/engine.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "services/cluster.h"
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
// Cluster-wide answers (services/cluster.h): snapshots, peers read and
// failed, waits for missing partitions, incomplete answers.
void CollectCluster(const ClusterPartialSource::Stats& stats, MetricFamilies* out);
// Alerts: Prometheus' ALERTS and ALERTS_FOR_STATE series, the evaluator's
// and (when set) the notifier's counters. leading set (replicas): exported
// as kpistream_alert_leader, and ALERTS only where it is true.
void CollectAlerting(const alerting::Alerter& alerter, const alerting::Notifier* notifier, MetricFamilies* out,
                     std::optional<bool> leading = std::nullopt);

// The process: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds, as Prometheus' client libraries name them
// (read from /proc/self; Linux only).
void CollectProcess(MetricFamilies* out);

// Every KPI over each of its default windows, as its own metric
// (kpi::KpiMetricName: kpistream_kpi_<name> with its unit's suffix, so that
// cross-KPI PromQL needs no label juggling:
// kpistream_kpi_spend_currency / kpistream_kpi_conversions) {window}, and
// per breakdown the KPI file exports (`export:`) as {window, breakdown,
// <dimensions>}: the top groups and "__other__", adding up to the whole.
// Also: the additive parts of each value (kpistream_kpi_input{kpi, input}),
// the status as a StateSet (kpistream_kpi_status{kpi, window, status}), the
// targets (kpistream_kpi_target{kpi, band, direction}). Evaluated through
// the shared query service on a thread of its own, after commits, at most
// once per min_interval (each evaluation scans the store: ~0.3 s for the
// default catalog's ~2,000 series), and shared by every scraper (several
// Prometheus replicas, dashboards): a scrape never evaluates.
// Thread-safety: Collect, OnCommit and Stop from any thread.
class KpiExport {
 public:
  // REQUIRES: catalog, queries and clock outlive the export.
  // min_interval_ms: the least time between two evaluations.
  // active (replicas: services/alert_leader.h): whether this replica
  // exports the KPI series; null: always. With replicas one exports them,
  // from cluster-wide answers, so PromQL sees each KPI once, exact, for
  // every kind of KPI (distinct counts and quantiles included), whichever
  // pod it comes from; the others export none, and every replica exports
  // kpistream_kpi_exporter (1 on the one that exports). An active export
  // also evaluates every min_interval without a local commit (a peer's
  // data changes too).
  KpiExport(const kpi::Catalog& catalog, const query::QueryService& queries, const state::Clock& clock,
            int64_t min_interval_ms = 5000, std::function<bool()> active = nullptr);
  ~KpiExport();  // Stop()
  KpiExport(const KpiExport&) = delete;
  KpiExport& operator=(const KpiExport&) = delete;

  // A commit happened: the thread re-evaluates once min_interval has passed
  // since the last evaluation. Cheap; from any thread (the engine's).
  void OnCommit();
  // Appends the last evaluation (evaluating once first if none was made
  // yet); never waits for an evaluation in progress otherwise.
  void Collect(MetricFamilies* out) const;
  void Stop();

 private:
  void Run();
  void Evaluate(MetricFamilies* out) const;
  const kpi::Catalog& catalog_;
  const query::QueryService& queries_;
  const state::Clock& clock_;
  const int64_t min_interval_ms_;
  const std::function<bool()> active_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = true;                                     // guarded by mu_: a commit since the last evaluation
  bool stop_ = false;                                     // guarded by mu_
  mutable std::shared_ptr<const MetricFamilies> cached_;  // guarded by mu_
  mutable std::mutex eval_mu_;                            // one evaluation at a time
  std::thread thread_;
};

}  // namespace kpistream::services
