#include "ingest/dead_letter.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace kpistream::ingest {

absl::StatusOr<std::unique_ptr<DeadLetterQueue>> DeadLetterQueue::Create(RdConf conf, std::string topic,
                                                                         size_t max_payload_bytes, EngineProbe* probe) {
  rd_kafka_conf_set_opaque(conf.get(), probe);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err) {
      static_cast<EngineProbe*>(opaque)->dlq_failed.fetch_add(1);
      spdlog::error("dead-letter delivery failed: {}", rd_kafka_err2str(m->err));
    }
  });
  char err[512];
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf.release(), err, sizeof(err));
  if (!producer) return absl::InvalidArgumentError(fmt::format("creating dead-letter producer: {}", err));
  return std::unique_ptr<DeadLetterQueue>(new DeadLetterQueue(producer, std::move(topic), max_payload_bytes, probe));
}

DeadLetterQueue::DeadLetterQueue(rd_kafka_t* producer, std::string topic, size_t max_payload_bytes, EngineProbe* probe)
    : producer_(producer), topic_(std::move(topic)), max_payload_bytes_(max_payload_bytes), probe_(probe) {}

DeadLetterQueue::~DeadLetterQueue() {
  rd_kafka_flush(producer_, 5000);
  rd_kafka_destroy(producer_);
}

void DeadLetterQueue::Send(const rd_kafka_message_t* m, std::string_view source_topic,
                           const PartitionApplier::Rejection& rej) {
  const std::string reason(RejectReasonName(rej.reason));
  const std::string partition = std::to_string(m->partition);
  const std::string offset = std::to_string(m->offset);
  rd_kafka_headers_t* h = rd_kafka_headers_new(6);
  rd_kafka_header_add(h, "kpistream.reason", -1, reason.data(), static_cast<ssize_t>(reason.size()));
  rd_kafka_header_add(h, "kpistream.error", -1, rej.detail.data(), static_cast<ssize_t>(rej.detail.size()));
  rd_kafka_header_add(h, "kpistream.source.topic", -1, source_topic.data(), static_cast<ssize_t>(source_topic.size()));
  rd_kafka_header_add(h, "kpistream.source.partition", -1, partition.data(), static_cast<ssize_t>(partition.size()));
  rd_kafka_header_add(h, "kpistream.source.offset", -1, offset.data(), static_cast<ssize_t>(offset.size()));
  size_t len = m->len;
  if (len > max_payload_bytes_) {
    len = max_payload_bytes_;
    const std::string original = std::to_string(m->len);
    rd_kafka_header_add(h, "kpistream.truncated", -1, original.data(), static_cast<ssize_t>(original.size()));
  }
  while (true) {
    const auto e = rd_kafka_producev(producer_, RD_KAFKA_V_TOPIC(topic_.c_str()),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(m->payload, len),
                                     RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(producer_, 100);
      continue;
    }
    if (e) {
      rd_kafka_headers_destroy(h);
      probe_->dlq_failed.fetch_add(1);
      spdlog::error("dead-letter produce failed: {}", rd_kafka_err2str(e));
    } else {
      ++pending_;
      probe_->dlq_produced.fetch_add(1, std::memory_order_relaxed);
    }
    break;
  }
}

void DeadLetterQueue::Poll() { rd_kafka_poll(producer_, 0); }

bool DeadLetterQueue::AllDelivered(int timeout_ms) {
  if (pending_ == 0) return true;
  rd_kafka_flush(producer_, timeout_ms);
  if (rd_kafka_outq_len(producer_) > 0) return false;
  pending_ = 0;
  return true;
}

}  // namespace kpistream::ingest
