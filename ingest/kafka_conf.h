// librdkafka client configuration for the engine: the consumer and the
// dead-letter producer built from EngineOptions (kafka.properties split by
// client type, then the settings the exactly-once loop depends on), and
// librdkafka's log lines routed through spdlog.
//
// Thread-safety: pure functions; librdkafka calls the log callback from its
// own threads (spdlog's default logger is thread-safe).
#pragma once

#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ingest/engine.h"

namespace kpistream::ingest {

struct RdConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using RdConf = std::unique_ptr<rd_kafka_conf_t, RdConfDeleter>;

// The consumer's configuration: kafka.properties (minus producer-only
// ones), then offsets kept in the state store (auto commit and offset store
// off), auto.offset.reset=error, read_committed, cooperative-sticky, the
// prefetch queue from fetch_queue_bytes. INVALID_ARGUMENT names a property
// librdkafka rejects.
[[nodiscard]] absl::StatusOr<RdConf> ConsumerConf(const EngineOptions& options);
// The dead-letter producer's: kafka.properties (minus consumer-only ones),
// linger.ms=5, message.timeout.ms=0 (retry until delivered).
[[nodiscard]] absl::StatusOr<RdConf> ProducerConf(const EngineOptions& options);

// Routes a client's log lines (syslog levels 0..7, rdkafka.h "log_cb") to
// spdlog at the matching level, as "kafka <client name> <facility>: <text>".
void RouteKafkaLogs(rd_kafka_conf_t* conf);

}  // namespace kpistream::ingest
