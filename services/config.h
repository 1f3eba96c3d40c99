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
//   max_future: 10m                # events further ahead of the clock are dead-lettered as `future`
//   kpi_export_interval: 5s        # KPI series on /metrics are re-evaluated at most this often
//   memory_budget_mb: 256
//   retention: {fine: 35d, hour: 400d, day: forever}   # per roll-up tier
//   alerting:
//     alertmanagers: [http://am-1:9093, http://am-2:9093]  # every URL gets every alert
//     webhooks: [https://hooks.example.com/kpi]            # same JSON as Alertmanager's
//     evaluation_interval: 15s     # and soon after each state commit
//     resend_interval: 1m
//     clock: wall                  # wall | event_time (replays, backfills, tests)
//     generator_url: http://kpid.example.com:9464/metrics
//     max_evaluation_gap: 1m       # longer without an evaluation is a gap (default: 4 x evaluation_interval, >= 1m)
//   grpc:
//     tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt}  # client_ca_file: require client certs
//     tokens_file: tokens.yaml     # bearer tokens with scopes (services/grpc_auth.h); reloaded when it changes
//     max_batch: 100               # queries per BatchGetKpis
//   cluster:                       # replicas answer for the whole cluster (needs kafka.changelog)
//     peers: [kpid-0.kpistream:50051, kpid-1.kpistream:50051]   # and/or
//     peers_dns: kpistream-headless:50051   # every address of the name is a replica
//     max_wait: 2s                 # for partitions no replica holds (a rebalance)
//     open_timeout: 1s             # a peer slower than this is left out of an answer
//     read_timeout: 30s            # one answer's reads from one peer
//     tls: {ca_file: ca.crt, cert_file: tls.crt, key_file: tls.key, server_name: kpistream}
//     token_file: peer-token       # bearer token (scope read) sent to peers
//   watch:
//     interval: 1s                 # at most one WatchKpis message per subscription per interval
//     max_streams: 10000           # concurrent WatchKpis streams (0: none served)
//     max_queries: 100             # queries per stream
//
// File names are relative to the config file's folder.
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
#include "services/cluster.h"
#include "services/grpc_auth.h"
#include "services/kpi_watch.h"
#include "services/web_config.h"

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
  int64_t kpi_export_interval_ms = 5000;  // services::KpiExport
  GrpcTlsOptions grpc_tls;
  std::string tokens_file;  // empty: no tokens needed
  size_t max_batch = 100;
  WatchOptions watch;
  // Set (peers or peers_dns): gRPC answers are cluster-wide (services/
  // cluster.h). replica_id is filled by kpid.
  ClusterOptions cluster;
  // http.web_config_file, loaded (services/web_config.h): TLS and users
  // for /metrics and /-/reload. Changes need a restart.
  std::string web_config_file;
  WebConfig web;
};

// Errors carry "file:line:col: what to fix", every error of the file, one
// per line (unknown keys at every level included).
[[nodiscard]] absl::StatusOr<KpidConfig> LoadKpidConfig(const std::string& path);
[[nodiscard]] absl::StatusOr<KpidConfig> ParseKpidConfig(std::string_view text, const std::string& path);
// Whether a file is a kpid config (a map with `kafka:` and no `measures:`),
// as opposed to a KPI file: told apart by structure, not by a substring.
bool LooksLikeKpidConfig(std::string_view text);
[[nodiscard]] absl::StatusOr<kpi::Catalog> LoadCatalogFor(const KpidConfig& config);

}  // namespace kpistream::services
