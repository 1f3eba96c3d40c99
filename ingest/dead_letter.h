// The dead-letter topic: every record the engine rejects is produced there
// with its original key and bytes (cut to a maximum) and headers saying why
// and where it came from:
//   kpistream.reason            the reject reason (RejectReasonName)
//   kpistream.error             what exactly was wrong
//   kpistream.source.topic      the record's topic,
//   kpistream.source.partition  partition
//   kpistream.source.offset     and offset: a replay after a crash can
//                               dead-letter a record again, and consumers
//                               of the topic de-duplicate on these three
//   kpistream.truncated         the original size, when the payload was cut
//
// Commit protocol: offsets are never stored past a record whose dead letter
// Kafka has not acknowledged, so the engine calls AllDelivered before each
// commit (the producer retries for as long as it takes: message.timeout.ms
// is 0).
//
// Thread-safety: one thread (the engine's consumer thread) calls every
// method; the delivery callback runs inside Poll and AllDelivered.
#pragma once

#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ingest/engine.h"
#include "ingest/kafka_conf.h"
#include "ingest/partition_applier.h"

namespace kpistream::ingest {

class DeadLetterQueue {
 public:
  // Creates the producer from `conf` (ProducerConf). Counts produced and
  // failed dead letters in probe->dlq_produced / dlq_failed.
  // REQUIRES: probe outlives the queue.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<DeadLetterQueue>> Create(RdConf conf, std::string topic,
                                                                               size_t max_payload_bytes,
                                                                               EngineProbe* probe);
  ~DeadLetterQueue();  // flushes for up to 5 s, then drops what is left
  DeadLetterQueue(const DeadLetterQueue&) = delete;
  DeadLetterQueue& operator=(const DeadLetterQueue&) = delete;

  // Produces the dead letter of record `m` from `source_topic`. Waits while
  // librdkafka's queue is full.
  void Send(const rd_kafka_message_t* m, std::string_view source_topic, const PartitionApplier::Rejection& rejection);
  // Serves delivery reports without waiting.
  void Poll();
  // True once every dead letter sent so far is acknowledged by Kafka,
  // waiting up to timeout_ms for them.
  bool AllDelivered(int timeout_ms);

 private:
  DeadLetterQueue(rd_kafka_t* producer, std::string topic, size_t max_payload_bytes, EngineProbe* probe);
  rd_kafka_t* producer_;
  std::string topic_;
  size_t max_payload_bytes_;
  EngineProbe* probe_;
  uint64_t pending_ = 0;  // sent since the last AllDelivered that returned true
};

}  // namespace kpistream::ingest
