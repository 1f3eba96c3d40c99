// The gRPC front of kpid: kpistream.v1.KpiService, the standard health
// service (NOT_SERVING until the engine is ready) and server reflection.
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
#include "state/clock.h"

namespace kpistream::services {

struct GrpcServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free port
  // Serves kpistream.v1.AlertService when set; must outlive the server.
  alerting::Alerter* alerter = nullptr;
};

class GrpcServer {
 public:
  // REQUIRES: catalog, queries and clock outlive the server.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options,
                                                                         const kpi::Catalog& catalog,
                                                                         const query::QueryService& queries,
                                                                         const state::Clock& clock);
  ~GrpcServer();

  // The address actually bound (with the chosen port).
  std::string address() const;
  // Health of "" and "kpistream.v1.KpiService".
  void SetServing(bool serving);
  void Shutdown();

 private:
  struct Rep;
  explicit GrpcServer(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
