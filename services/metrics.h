// The Prometheus exporter: /metrics with KPI values (evaluated at scrape time
// over each KPI's default windows) and the service's own health, collected
// from the engine probe and the store. It owns no metrics of its own.
//
// Thread-safety: scrapes run on the HTTP server's threads and only read.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/engine.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "state/clock.h"
#include "state/store.h"

namespace kpistream::services {

class MetricsExporter {
 public:
  // listen: host:port (port 0 picks a free port).
  // REQUIRES: everything passed outlives the exporter.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(
      const std::string& listen, const kpi::Catalog& catalog, const query::QueryService& queries,
      const state::Store& store, const ingest::EngineProbe& probe, std::function<bool()> ready,
      const state::Clock& clock, const alerting::Alerter* alerter = nullptr,
      const alerting::Notifier* notifier = nullptr);
  ~MetricsExporter();
  std::string address() const;

 private:
  struct Rep;
  explicit MetricsExporter(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
