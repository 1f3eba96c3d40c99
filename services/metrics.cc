#include "services/metrics.h"

#include <fmt/format.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "query/query.h"
#include "services/utf8.h"

namespace kpistream::services {

namespace prom = prometheus;

namespace {

prom::MetricFamily Family(std::string name, std::string help, prom::MetricType type) {
  prom::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

prom::ClientMetric Sample(double v, prom::MetricType type, std::vector<prom::ClientMetric::Label> labels = {}) {
  prom::ClientMetric m;
  m.label = std::move(labels);
  if (type == prom::MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  return m;
}

// Everything is computed at scrape time from the probe, the store and the
// catalog: dynamic KPI series never go through Family::Add (slow at runtime).
class Collector final : public prom::Collectable {
 public:
  Collector(const kpi::Catalog& catalog, const query::QueryService& queries, const state::Store& store,
            const ingest::EngineProbe& probe, std::function<bool()> ready, const state::Clock& clock,
            const alerting::Alerter* alerter, const alerting::Notifier* notifier)
      : catalog_(catalog),
        store_(store),
        probe_(probe),
        query_(queries),
        ready_(std::move(ready)),
        clock_(clock),
        alerter_(alerter),
        notifier_(notifier) {}

  std::vector<prom::MetricFamily> Collect() const override {
    std::vector<prom::MetricFamily> out;
    const auto C = prom::MetricType::Counter;
    const auto G = prom::MetricType::Gauge;
    auto counter = [&](const char* name, const char* help, uint64_t v) {
      auto f = Family(name, help, C);
      f.metric.push_back(Sample(static_cast<double>(v), C));
      out.push_back(std::move(f));
    };
    auto gauge = [&](const char* name, const char* help, double v) {
      auto f = Family(name, help, G);
      f.metric.push_back(Sample(v, G));
      out.push_back(std::move(f));
    };

    gauge("kpistream_ready", "1 when kpid serves: state loaded, partitions assigned, commits succeeding.",
          ready_() ? 1 : 0);
    gauge("kpistream_kafka_reachable", "0 while every Kafka broker is unreachable.",
          probe_.kafka_reachable.load() ? 1 : 0);
    counter("kpistream_records_lost_total",
            "Records deleted from Kafka before kpid applied them, skipped under --accept-lost-records.",
            probe_.lost_records.load());
    counter("kpistream_fetch_stalls_total",
            "Partitions with records waiting in Kafka from which nothing arrived for the stall timeout; kpid "
            "re-seeked them.",
            probe_.fetch_stalls.load());
    const auto& in = probe_.ingest;
    counter("kpistream_dedup_lookup_failures_total",
            "Event-id lookups the state store could not answer; kpid held the partition and retried.",
            in.dedup_lookup_failures.load());
    counter("kpistream_records_consumed_total", "Records read from the input topics.", in.consumed.load());
    counter("kpistream_records_applied_total", "Records decoded and applied to the KPI state.", in.applied.load());
    counter("kpistream_skipped_offsets_total",
            "Offsets that hold no record for kpid (transaction markers, aborted transactions' records), stepped over.",
            probe_.skipped_offsets.load());
    counter("kpistream_watermark_resets_total",
            "Committed event-time watermarks found further than max_future ahead of the clock at start, reset to "
            "the clock.",
            in.watermarks_reset.load());
    {
      auto f = Family("kpistream_records_rejected_total",
                      "Records rejected (and sent to the dead-letter topic), by reason.", C);
      for (int r = 0; r < ingest::kNumRejectReasons; ++r) {
        f.metric.push_back(
            Sample(static_cast<double>(in.rejected[r].load()), C,
                   {{"reason", std::string(ingest::RejectReasonName(static_cast<ingest::RejectReason>(r)))}}));
      }
      out.push_back(std::move(f));
    }
    {
      auto late = Family("kpistream_late_contributions_total",
                         "Contributions dropped because the event was older than the measure's allowed lateness.", C);
      auto fallback = Family("kpistream_time_fallbacks_total",
                             "Contributions filed under event_time because the measure's `time` field was missing.", C);
      for (size_t i = 0; i < catalog_.measures.size() && i < in.late_by_measure.size(); ++i) {
        const auto& name = catalog_.measures[i].name;
        late.metric.push_back(Sample(static_cast<double>(in.late_by_measure[i].load()), C, {{"measure", name}}));
        if (!catalog_.measures[i].time_field.empty()) {
          fallback.metric.push_back(
              Sample(static_cast<double>(in.time_fallback_by_measure[i].load()), C, {{"measure", name}}));
        }
      }
      out.push_back(std::move(late));
      out.push_back(std::move(fallback));
      auto over = Family("kpistream_group_overflow_total",
                         "Events whose value of a group-by dimension went to __other__ (the dimension's cap of "
                         "distinct values per partition was reached).",
                         C);
      auto cut =
          Family("kpistream_dimension_values_cut_total",
                 "Events whose value of a group-by dimension was longer than max_dimension_bytes and was cut.", C);
      for (size_t i = 0; i < catalog_.dimensions.size() && i < in.overflow_by_dimension.size(); ++i) {
        const auto& d = catalog_.dimensions[i];
        const std::vector<prom::ClientMetric::Label> labels = {{"dimension", d.name},
                                                               {"family", std::string(kpi::FamilyName(d.family))}};
        over.metric.push_back(Sample(static_cast<double>(in.overflow_by_dimension[i].load()), C, labels));
        cut.metric.push_back(Sample(static_cast<double>(in.cut_by_dimension[i].load()), C, labels));
      }
      out.push_back(std::move(over));
      out.push_back(std::move(cut));
    }
    counter("kpistream_dead_letters_total", "Records written to the dead-letter topic.", probe_.dlq_produced.load());
    counter("kpistream_dead_letter_failures_total", "Dead-letter writes that failed.", probe_.dlq_failed.load());
    counter("kpistream_commits_total", "State commits (partials + offsets in one batch).", probe_.commits.load());
    counter("kpistream_commit_failures_total", "State commits that failed or were held back.",
            probe_.commit_failures.load());
    counter("kpistream_rebalances_total", "Consumer-group rebalance callbacks.", probe_.rebalances.load());
    {
      const auto st = query_.cache_stats();
      auto f = Family("kpistream_query_cache_requests_total",
                      "KPI queries (gRPC, /metrics, alert rules) by how they were answered: hit (cached result), "
                      "shared (waited for the same query's evaluation in progress) or miss (evaluated).",
                      C);
      f.metric.push_back(Sample(static_cast<double>(st.hits), C, {{"result", "hit"}}));
      f.metric.push_back(Sample(static_cast<double>(st.shared), C, {{"result", "shared"}}));
      f.metric.push_back(Sample(static_cast<double>(st.misses), C, {{"result", "miss"}}));
      out.push_back(std::move(f));
    }
    gauge("kpistream_assigned_partitions", "Input partitions owned by this instance.",
          static_cast<double>(probe_.assigned_partitions.load()));
    {
      const int64_t newest = probe_.newest_event_ms.load();
      gauge("kpistream_newest_event_timestamp_seconds", "Event time of the newest committed (queryable) event.",
            static_cast<double>(newest) / 1000.0);
      if (newest > 0) {
        gauge("kpistream_freshness_seconds",
              "End-to-end freshness: now - event time of the newest event visible to queries (never negative).",
              std::max(0.0, static_cast<double>(clock_.NowMs() - newest) / 1000.0));
      }
    }
    {
      auto f =
          Family("kpistream_consumer_lag_records", "Records in Kafka not yet committed to state, per partition.", G);
      for (const auto& l : probe_.Lags()) {
        f.metric.push_back(
            Sample(static_cast<double>(l.lag), G, {{"partition", std::to_string(l.partition)}, {"topic", l.topic}}));
      }
      out.push_back(std::move(f));
    }
    {
      auto f = Family("kpistream_commit_duration_seconds", "Latency of state commits.", prom::MetricType::Histogram);
      std::vector<uint64_t> cum;
      double sum;
      uint64_t count;
      probe_.commit_latency.Snapshot(&cum, &sum, &count);
      prom::ClientMetric m;
      m.histogram.sample_count = count;
      m.histogram.sample_sum = sum;
      for (size_t i = 0; i < cum.size(); ++i) {
        m.histogram.bucket.push_back({cum[i], i < ingest::LatencyHistogram::kBounds.size()
                                                  ? ingest::LatencyHistogram::kBounds[i]
                                                  : std::numeric_limits<double>::infinity()});
      }
      f.metric.push_back(std::move(m));
      out.push_back(std::move(f));
    }
    {
      const auto st = store_.Stats();
      gauge("kpistream_state_live_bytes", "Estimated live data in the state store.",
            static_cast<double>(st.live_data_bytes));
      gauge("kpistream_state_sst_bytes", "Size of the state store's SST files.",
            static_cast<double>(st.sst_files_bytes));
      gauge("kpistream_state_memtable_bytes", "Memory held by the state store's memtables.",
            static_cast<double>(st.memtable_bytes));
      gauge("kpistream_state_block_cache_bytes", "State block-cache usage (memtables are charged to it).",
            static_cast<double>(st.block_cache_usage_bytes));
      gauge("kpistream_state_table_readers_bytes",
            "Memory of the state store's open tables outside the block cache (index and bloom filter blocks).",
            static_cast<double>(st.table_readers_bytes));
      gauge("kpistream_state_pending_compaction_bytes", "Bytes the state store estimates compaction must rewrite.",
            static_cast<double>(st.pending_compaction_bytes));
      gauge("kpistream_state_running_compactions", "Compactions running now.",
            static_cast<double>(st.running_compactions));
      gauge("kpistream_state_keys", "Estimated number of keys in the state store.",
            static_cast<double>(st.estimated_keys));
    }
    if (alerter_) CollectAlerts(&out);
    // KPI values scan the store; several scrapers (Prometheus HA pairs,
    // dashboards, probes) share one evaluation per kKpiCacheTtl.
    {
      std::lock_guard<std::mutex> lock(kpi_mu_);
      const auto now = std::chrono::steady_clock::now();
      if (kpi_cache_.empty() || now - kpi_cached_at_ >= kKpiCacheTtl) {
        kpi_cache_.clear();
        CollectKpis(&kpi_cache_);
        kpi_cached_at_ = now;
      }
      out.insert(out.end(), kpi_cache_.begin(), kpi_cache_.end());
    }
    return out;
  }

 private:
  void CollectKpis(std::vector<prom::MetricFamily>* out) const {
    auto f =
        Family("kpistream_kpi_value", "Current KPI value over each of its default windows (see ListKpis for units).",
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
        auto answer = query_.Get(q);
        if (!answer.ok()) {
          ++errors;
          continue;
        }
        for (const auto& gv : answer->values) {
          // No value (e.g. a ratio over zero events) is an absent sample.
          if (!gv.value) continue;
          f.metric.push_back(
              Sample(*gv.value, prom::MetricType::Gauge, {{"kpi", k.name}, {"unit", k.unit}, {"window", w}}));
          if (k.target) {
            const auto st = k.target->Classify(gv.value);
            status.metric.push_back(Sample(static_cast<double>(static_cast<int>(st) - 1), prom::MetricType::Gauge,
                                           {{"kpi", k.name}, {"window", w}}));
          }
        }
      }
    }
    out->push_back(std::move(status));
    out->push_back(std::move(f));
    auto e = Family("kpistream_kpi_query_errors", "KPI evaluations that failed during this scrape.",
                    prom::MetricType::Gauge);
    e.metric.push_back(Sample(static_cast<double>(errors), prom::MetricType::Gauge));
    out->push_back(std::move(e));
  }

  // Prometheus' own alert series, so dashboards and rules treat kpid's
  // alerts like any other: ALERTS{alertname, alertstate, ...labels} 1 and
  // ALERTS_FOR_STATE (the time the instance became active, in seconds).
  void CollectAlerts(std::vector<prom::MetricFamily>* out) const {
    const auto G = prom::MetricType::Gauge;
    const auto C = prom::MetricType::Counter;
    auto alerts = Family("ALERTS", "Pending and firing kpistream alerts.", G);
    auto for_state = Family("ALERTS_FOR_STATE", "When each pending or firing alert became active (Unix seconds).", G);
    for (const auto& a : alerter_->Alerts()) {
      const bool firing = a.state == alerting::AlertState::kFiring;
      if (!firing && a.state != alerting::AlertState::kPending) continue;
      // The exposition is UTF-8: invalid bytes of a dimension value show as
      // U+FFFD (the alert's identity in kpid is the bytes).
      std::vector<prom::ClientMetric::Label> labels;
      for (const auto& [k, v] : a.labels) labels.push_back({k, ValidUtf8(v)});
      for_state.metric.push_back(Sample(static_cast<double>(a.active_since_ms / 1000), G, labels));
      labels.push_back({"alertstate", firing ? "firing" : "pending"});
      alerts.metric.push_back(Sample(1, G, std::move(labels)));
    }
    out->push_back(std::move(alerts));
    out->push_back(std::move(for_state));
    const auto st = alerter_->stats();
    auto evals = Family("kpistream_alert_evaluations_total", "Alert evaluation rounds.", C);
    evals.metric.push_back(Sample(static_cast<double>(st.evaluations), C));
    out->push_back(std::move(evals));
    auto fails = Family("kpistream_alert_evaluation_failures_total",
                        "Rule evaluations that failed (the instances kept their state).", C);
    fails.metric.push_back(Sample(static_cast<double>(st.evaluation_failures), C));
    out->push_back(std::move(fails));
    auto persist = Family("kpistream_alert_persist_failures_total", "Alert state writes that failed.", C);
    persist.metric.push_back(Sample(static_cast<double>(st.persist_failures), C));
    out->push_back(std::move(persist));
    auto gaps = Family("kpistream_alert_gaps_total",
                       "Gaps in rule evaluation (kpid down or replaying, a jump of the event-time clock), by how "
                       "they were handled: sampled (a KPI rule's condition evaluated across the gap) or unknown (an "
                       "age rule's instance: the gap counted neither as held nor as cleared).",
                       C);
    gaps.metric.push_back(Sample(static_cast<double>(st.gaps_sampled), C, {{"handling", "sampled"}}));
    gaps.metric.push_back(Sample(static_cast<double>(st.gaps), C, {{"handling", "unknown"}}));
    out->push_back(std::move(gaps));
    auto duration =
        Family("kpistream_alert_evaluation_duration_seconds", "How long the last evaluation of every rule took.", G);
    duration.metric.push_back(Sample(st.last_duration_s, G));
    out->push_back(std::move(duration));
    if (!notifier_) return;
    auto sent = Family("kpistream_alert_notifications_total",
                       "Requests to Alertmanager and webhooks, by target and result.", C);
    auto up = Family("kpistream_alert_target_up", "1 when the last request to the target succeeded.", G);
    auto alerts_sent = Family("kpistream_alerts_sent_total", "Alerts sent, by target.", C);
    for (const auto& t : notifier_->stats()) {
      sent.metric.push_back(Sample(static_cast<double>(t.sent), C, {{"result", "ok"}, {"target", t.url}}));
      sent.metric.push_back(Sample(static_cast<double>(t.failed), C, {{"result", "failed"}, {"target", t.url}}));
      up.metric.push_back(Sample(t.up ? 1 : 0, G, {{"target", t.url}}));
      alerts_sent.metric.push_back(Sample(static_cast<double>(t.alerts_sent), C, {{"target", t.url}}));
    }
    out->push_back(std::move(sent));
    out->push_back(std::move(up));
    out->push_back(std::move(alerts_sent));
  }

  static constexpr std::chrono::seconds kKpiCacheTtl{2};
  const kpi::Catalog& catalog_;
  const state::Store& store_;
  const ingest::EngineProbe& probe_;
  const query::QueryService& query_;
  std::function<bool()> ready_;
  const state::Clock& clock_;
  const alerting::Alerter* alerter_;
  const alerting::Notifier* notifier_;
  mutable std::mutex kpi_mu_;
  mutable std::vector<prom::MetricFamily> kpi_cache_;  // guarded by kpi_mu_
  mutable std::chrono::steady_clock::time_point kpi_cached_at_;
};

}  // namespace

struct MetricsExporter::Rep {
  std::shared_ptr<Collector> collector;
  std::unique_ptr<prom::Exposer> exposer;
  std::string address;
};

MetricsExporter::MetricsExporter(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
MetricsExporter::~MetricsExporter() = default;

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& listen, const kpi::Catalog& catalog, const query::QueryService& queries,
    const state::Store& store, const ingest::EngineProbe& probe, std::function<bool()> ready, const state::Clock& clock,
    const alerting::Alerter* alerter, const alerting::Notifier* notifier) {
  auto rep = std::make_unique<Rep>();
  rep->collector =
      std::make_shared<Collector>(catalog, queries, store, probe, std::move(ready), clock, alerter, notifier);
  try {
    rep->exposer = std::make_unique<prom::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("cannot serve /metrics on {}: {}", listen, e.what()));
  }
  rep->exposer->RegisterCollectable(rep->collector);
  const auto ports = rep->exposer->GetListeningPorts();
  const auto colon = listen.rfind(':');
  rep->address = fmt::format("{}:{}", listen.substr(0, colon), ports.empty() ? 0 : ports.front());
  return std::unique_ptr<MetricsExporter>(new MetricsExporter(std::move(rep)));
}

std::string MetricsExporter::address() const { return rep_->address; }

}  // namespace kpistream::services
