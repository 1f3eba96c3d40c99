// kpid's configuration file.
//
//   kafka:
//     brokers: broker-1:9092,broker-2:9092
//     group_id: kpistream
//     topics: {campaign: kpi.campaign, product: kpi.product, crm: kpi.crm}
//     format: auto                 # auto | protobuf | json
//     dlq_topic: kpistream.dlq
//     properties:                  # librdkafka pass-through (SASL, TLS, ...)
//       security.protocol: SASL_SSL
//   catalog: kpis.yaml             # relative to this file; default: built-in
//   commit_interval: 200ms
//   memory_budget_mb: 256
//   retention: {fine: 35d, hour: 400d, day: forever}   # per roll-up tier
//   alerting:
//     alertmanagers: [http://am-1:9093, http://am-2:9093]  # every URL gets every alert
//     webhooks: [https://hooks.example.com/kpi]            # same JSON as Alertmanager's
//     evaluation_interval: 15s     # and soon after each state commit
//     resend_interval: 1m
//     clock: wall                  # wall | event_time (replays, backfills, tests)
//     generator_url: http://kpid.example.com:9464/metrics
//
// Thread-safety: plain values.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/engine.h"
#include "kpi/catalog.h"

namespace kpistream::services {

struct KpidConfig {
  ingest::EngineOptions engine;
  std::string catalog_path;  // empty: built-in default catalog
  uint64_t memory_budget_bytes = 256ull << 20;
  uint64_t min_free_disk_bytes = 64ull << 20;  // state::StoreOptions::min_free_bytes
  // Seconds per tier, 0 = forever (state::StoreOptions has the defaults).
  std::optional<int64_t> retention_fine_s, retention_hour_s, retention_day_s;
  alerting::AlerterOptions alerter;
  alerting::NotifierOptions notifier;
  bool alert_clock_event_time = false;
};

// Errors carry "file:line:col: what to fix".
[[nodiscard]] absl::StatusOr<KpidConfig> LoadKpidConfig(const std::string& path);
[[nodiscard]] absl::StatusOr<kpi::Catalog> LoadCatalogFor(const KpidConfig& config);

}  // namespace kpistream::services
