// The gRPC front of kpid: kpistream.v1.KpiService and AlertService, the
// standard health service and server reflection.
//
// Thread-safety: all methods are safe from any thread. Request handlers run
// on gRPC's threads and only read (the query service).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "alerting/alerter.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "services/grpc_auth.h"
#include "services/grpc_metrics.h"
#include "state/clock.h"

namespace kpistream::services {

// What the gRPC services read. A reload swaps it; a request keeps the view
// it started with (`owner` keeps it alive) until it finishes.
struct ServingView {
  const kpi::Catalog* catalog = nullptr;
  const query::QueryService* queries = nullptr;
  alerting::Alerter* alerter = nullptr;  // null: no AlertService answers
  // Replicas: this replica's own partitions, which peers read
  // (services/partials_service.h), and the catalog's state ids. Null: not
  // a replica.
  const query::PartialSource* partials = nullptr;
  const kpi::StateIds* ids = nullptr;
  // queries reads peers (cluster.peers): its answers may wait on the
  // network, so GetKpi runs them off gRPC's callback threads.
  bool remote = false;
  std::shared_ptr<const void> owner;
};
using ServingViewFn = std::function<ServingView()>;

class WatchHub;

struct GrpcServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free port
  // Registers kpistream.v1.AlertService.
  bool alerts = true;
  // WatchKpis streams (null: refused with UNAVAILABLE). REQUIRES: outlives
  // the server's shutdown.
  WatchHub* watch = nullptr;
  size_t max_batch = 100;  // queries per BatchGetKpis
  GrpcTlsOptions tls;      // empty cert_file: plaintext
  // Bearer tokens for KpiService (scope read) and AlertService (alerts);
  // null: no tokens needed. REQUIRES: outlives the server.
  TokenAuthenticator* auth = nullptr;
  // Non-empty: this kpid is a replica with this id, and serves its own
  // partitions to peers (kpistream.internal.v1.PartialsService).
  std::string replica_id;
};

class GrpcServer {
 public:
  // Binds the address (never shared with another process: SO_REUSEPORT
  // is off). UNAVAILABLE when it is in use or not allowed;
  // INVALID_ARGUMENT when the TLS files cannot be used.
  // REQUIRES: view and clock outlive the server.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options,
                                                                         ServingViewFn view, const state::Clock& clock);
  ~GrpcServer();

  // The address actually bound (with the chosen port).
  std::string address() const;
  // Health: reads ("", kpistream.v1.KpiService, kpistream.v1.AlertService)
  // and ingestion (kpistream.ingest) apart: a broker outage stops
  // ingestion, not reads.
  void SetServing(bool reads, bool ingesting);
  void Shutdown();
  // Requests by method and code, and their latency (grpc_metrics.h).
  const GrpcMetrics& metrics() const;

 private:
  struct Rep;
  explicit GrpcServer(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
