#include <limits>

#include "services/metrics.h"

namespace kpistream::services {

namespace prom = prometheus;
namespace {
const auto C = prom::MetricType::Counter;
const auto G = prom::MetricType::Gauge;

// Records rejected by reason, contributions late or filed under event_time
// by measure, dimension values overflowing or cut by dimension.
void CollectRecordOutcomes(const ingest::IngestStats& in, const kpi::Catalog& catalog, MetricFamilies* out) {
  auto f =
      Family("kpistream_records_rejected_total", "Records rejected (and sent to the dead-letter topic), by reason.", C);
  for (int r = 0; r < ingest::kNumRejectReasons; ++r) {
    f.metric.push_back(
        Sample(static_cast<double>(in.rejected[r].load()), C,
               {{"reason", std::string(ingest::RejectReasonName(static_cast<ingest::RejectReason>(r)))}}));
  }
  out->push_back(std::move(f));
  auto late = Family("kpistream_late_contributions_total",
                     "Contributions dropped because the event was older than the measure's allowed lateness.", C);
  auto fallback = Family("kpistream_time_fallbacks_total",
                         "Contributions filed under event_time because the measure's `time` field was missing, invalid "
                         "or after event_time.",
                         C);
  for (size_t i = 0; i < catalog.measures.size() && i < in.late_by_measure.size(); ++i) {
    const auto& name = catalog.measures[i].name;
    late.metric.push_back(Sample(static_cast<double>(in.late_by_measure[i].load()), C, {{"measure", name}}));
    if (!catalog.measures[i].time_field.empty()) {
      fallback.metric.push_back(
          Sample(static_cast<double>(in.time_fallback_by_measure[i].load()), C, {{"measure", name}}));
    }
  }
  out->push_back(std::move(late));
  out->push_back(std::move(fallback));
  auto over = Family("kpistream_group_overflow_total",
                     "Events whose value of a group-by dimension went to __other__ (the dimension's cap of "
                     "distinct values per partition was reached).",
                     C);
  auto cut = Family("kpistream_dimension_values_cut_total",
                    "Events whose value of a group-by dimension was longer than max_dimension_bytes and was cut.", C);
  for (size_t i = 0; i < catalog.dimensions.size() && i < in.overflow_by_dimension.size(); ++i) {
    const auto& d = catalog.dimensions[i];
    const std::vector<prom::ClientMetric::Label> labels = {{"dimension", d.name},
                                                           {"family", std::string(kpi::FamilyName(d.family))}};
    over.metric.push_back(Sample(static_cast<double>(in.overflow_by_dimension[i].load()), C, labels));
    cut.metric.push_back(Sample(static_cast<double>(in.cut_by_dimension[i].load()), C, labels));
  }
  out->push_back(std::move(over));
  out->push_back(std::move(cut));
}

void AddHistogram(MetricFamilies* out, const char* name, const char* help, const ingest::LatencyHistogram& h) {
  auto f = Family(name, help, prom::MetricType::Histogram);
  std::vector<uint64_t> cum;
  double sum;
  uint64_t count;
  h.Snapshot(&cum, &sum, &count);
  prom::ClientMetric m;
  m.histogram.sample_count = count;
  m.histogram.sample_sum = sum;
  for (size_t i = 0; i < cum.size(); ++i) {
    m.histogram.bucket.push_back({cum[i], i < ingest::LatencyHistogram::kBounds.size()
                                              ? ingest::LatencyHistogram::kBounds[i]
                                              : std::numeric_limits<double>::infinity()});
  }
  f.metric.push_back(std::move(m));
  out->push_back(std::move(f));
}

// Lag per partition and the commit latency histogram.
void CollectLagAndCommitLatency(const ingest::EngineProbe& probe, MetricFamilies* out) {
  auto f = Family("kpistream_consumer_lag_records", "Records in Kafka not yet committed to state, per partition.", G);
  for (const auto& l : probe.Lags()) {
    f.metric.push_back(
        Sample(static_cast<double>(l.lag), G, {{"partition", std::to_string(l.partition)}, {"topic", l.topic}}));
  }
  out->push_back(std::move(f));
  AddHistogram(out, "kpistream_commit_duration_seconds", "Latency of state commits.", probe.commit_latency);
  AddHistogram(out, "kpistream_changelog_restore_duration_seconds",
               "Time to restore an assigned partition from its changelog (kafka.changelog).", probe.restore_latency);
}

}  // namespace

void CollectEngine(const ingest::Engine& engine, const kpi::Catalog& catalog, const state::Clock& clock,
                   MetricFamilies* out) {
  const auto& probe = engine.probe();
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    AddCounter(out, name, help, static_cast<double>(v));
  };
  auto gauge = [&](const char* name, const char* help, double v) { AddGauge(out, name, help, v); };
  gauge("kpistream_ready", "1 when kpid serves: state loaded, partitions assigned, commits succeeding.",
        engine.Ready() ? 1 : 0);
  gauge("kpistream_caught_up",
        "1 when every owned partition has been read up to where it stood when assigned, and little waits in Kafka.",
        engine.CaughtUp() ? 1 : 0);
  gauge("kpistream_kafka_reachable", "0 while every Kafka broker is unreachable.",
        probe.kafka_reachable.load() ? 1 : 0);
  counter("kpistream_records_lost_total",
          "Records deleted from Kafka before kpid applied them, skipped under --accept-lost-records.",
          probe.lost_records.load());
  counter("kpistream_changelog_restores_total", "Partitions restored from their changelog on assignment.",
          probe.restores.load());
  counter("kpistream_changelog_restored_records_total", "Changelog records read by restores.",
          probe.restored_records.load());
  counter("kpistream_changelog_restored_bytes_total", "Changelog bytes (keys and values) read by restores.",
          probe.restored_bytes.load());
  counter("kpistream_changelog_records_total", "Records written to changelogs, in the commits' transactions.",
          probe.changelog_records.load());
  counter("kpistream_changelog_failures_total",
          "Changelog transactions that failed (aborted; the commit was retried from the stored offsets).",
          probe.changelog_failures.load());
  counter("kpistream_changelog_tombstones_total",
          "Keys past retention deleted from owned partitions' state, each with a tombstone in its changelog.",
          probe.changelog_tombstones.load());
  counter("kpistream_fetch_stalls_total",
          "Partitions with records waiting in Kafka from which nothing arrived for the stall timeout; kpid "
          "re-seeked them.",
          probe.fetch_stalls.load());
  const auto& in = probe.ingest;
  counter("kpistream_dedup_lookup_failures_total",
          "Event-id lookups the state store could not answer; kpid held the partition and retried.",
          in.dedup_lookup_failures.load());
  counter("kpistream_schema_registry_retries_total",
          "Records of a schema-registry source held and read again later because the registry did not answer for "
          "their schema id (never dead-lettered for it).",
          in.schema_registry_retries.load());
  counter("kpistream_records_consumed_total", "Records read from the input topics.", in.consumed.load());
  counter("kpistream_records_applied_total", "Records decoded and applied to the KPI state.", in.applied.load());
  counter("kpistream_skipped_offsets_total",
          "Offsets that hold no record for kpid (transaction markers, aborted transactions' records), stepped over.",
          probe.skipped_offsets.load());
  counter("kpistream_watermark_resets_total",
          "Committed event-time watermarks found further than max_future ahead of the clock at start, reset to "
          "the clock.",
          in.watermarks_reset.load());
  CollectRecordOutcomes(in, catalog, out);
  counter("kpistream_dead_letters_total", "Records written to the dead-letter topic.", probe.dlq_produced.load());
  counter("kpistream_dead_letter_failures_total", "Dead-letter writes that failed.", probe.dlq_failed.load());
  counter("kpistream_commits_total", "State commits (partials + offsets in one batch).", probe.commits.load());
  counter("kpistream_commit_failures_total", "State commits that failed or were held back.",
          probe.commit_failures.load());
  counter("kpistream_rebalances_total", "Consumer-group rebalance callbacks.", probe.rebalances.load());
  gauge("kpistream_assigned_partitions", "Input partitions owned by this instance.",
        static_cast<double>(probe.assigned_partitions.load()));
  {
    const int64_t newest = probe.newest_event_ms.load();
    gauge("kpistream_newest_event_timestamp_seconds", "Event time of the newest committed (queryable) event.",
          static_cast<double>(newest) / 1000.0);
    if (newest > 0) {
      gauge("kpistream_freshness_seconds",
            "End-to-end freshness: now - event time of the newest event visible to queries (never negative).",
            std::max(0.0, static_cast<double>(clock.NowMs() - newest) / 1000.0));
    }
    auto f = Family("kpistream_family_freshness_seconds",
                    "Freshness per event family (campaign, product, crm): now - event time of its newest event "
                    "visible to queries (never negative); absent before the family's first event.",
                    G);
    for (size_t i = 0; i < kpi::kNumFamilies; ++i) {
      const int64_t t = probe.newest_event_ms_by_family[i].load();
      if (t <= 0) continue;
      f.metric.push_back(Sample(std::max(0.0, static_cast<double>(clock.NowMs() - t) / 1000.0), G,
                                {{"family", std::string(kpi::FamilyName(static_cast<kpi::Family>(i)))}}));
    }
    out->push_back(std::move(f));
  }
  CollectLagAndCommitLatency(probe, out);
}

}  // namespace kpistream::services
