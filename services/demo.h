// The embedded demo: a Kafka-protocol broker inside the process (librdkafka's
// mock cluster) fed by the built-in generator, so `kpid` with no
// configuration shows live KPIs at once. Not for production data.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ingest/engine.h"

namespace kpistream::services {

struct DemoOptions {
  std::string topic_prefix = "kpi.";
  int partitions = 4;
  double rate = 2000;         // live events per second
  uint64_t backfill = 50000;  // events spread over the past backfill_span_s
  int64_t backfill_span_s = 2 * 3600;
  uint64_t bad_every = 1000;  // a bad record now and then, to show the DLQ
  uint64_t seed = 1;
};

class EmbeddedDemo {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EmbeddedDemo>> Start(const DemoOptions& options);
  ~EmbeddedDemo();
  std::string bootstrap() const;
  // How kpid consumes the demo's topics.
  ingest::EngineOptions EngineOptions() const;
  void Stop();

 private:
  struct Rep;
  explicit EmbeddedDemo(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
