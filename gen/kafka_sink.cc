#include "gen/kafka_sink.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <atomic>

namespace kpistream::gen {

struct KafkaSink::Rep {
  rd_kafka_t* rk = nullptr;
  std::atomic<uint64_t> failures{0};
  std::string last_error;
  ~Rep() {
    if (rk) rd_kafka_destroy(rk);
  }
};

KafkaSink::KafkaSink(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
KafkaSink::~KafkaSink() = default;

absl::StatusOr<std::unique_ptr<KafkaSink>> KafkaSink::Open(const std::string& brokers,
                                                           const std::map<std::string, std::string>& properties) {
  auto rep = std::make_unique<Rep>();
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  std::map<std::string, std::string> settings = {{"bootstrap.servers", brokers},
                                                 {"enable.idempotence", "true"},
                                                 {"linger.ms", "10"},
                                                 {"batch.num.messages", "10000"},
                                                 {"queue.buffering.max.messages", "500000"},
                                                 {"compression.codec", "lz4"}};
  for (const auto& [k, v] : properties) settings[k] = v;
  for (const auto& [k, v] : settings) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError(fmt::format("kafka setting {}={}: {}", k, v, err));
    }
  }
  rd_kafka_conf_set_opaque(conf, rep.get());
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err) static_cast<Rep*>(opaque)->failures.fetch_add(1);
  });
  rep->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rep->rk) return absl::InvalidArgumentError(fmt::format("creating producer: {}", err));
  return std::unique_ptr<KafkaSink>(new KafkaSink(std::move(rep)));
}

absl::Status KafkaSink::CreateTopics(const std::vector<std::string>& topics, int partitions) {
  std::vector<rd_kafka_NewTopic_t*> nts;
  char err[512];
  for (const auto& t : topics) {
    auto* nt = rd_kafka_NewTopic_new(t.c_str(), partitions, 1, err, sizeof(err));
    if (!nt) return absl::InvalidArgumentError(fmt::format("topic {}: {}", t, err));
    nts.push_back(nt);
  }
  rd_kafka_queue_t* q = rd_kafka_queue_new(rep_->rk);
  rd_kafka_CreateTopics(rep_->rk, nts.data(), nts.size(), nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  absl::Status st = absl::OkStatus();
  if (!ev) {
    st = absl::DeadlineExceededError("creating topics: no answer from Kafka within 30 s");
  } else {
    const auto* res = rd_kafka_event_CreateTopics_result(ev);
    if (rd_kafka_event_error(ev)) {
      st = absl::UnavailableError(fmt::format("creating topics: {}", rd_kafka_event_error_string(ev)));
    } else if (res) {
      size_t n = 0;
      const auto** results = rd_kafka_CreateTopics_result_topics(res, &n);
      for (size_t i = 0; i < n; ++i) {
        const auto e = rd_kafka_topic_result_error(results[i]);
        if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
          st = absl::UnavailableError(
              fmt::format("creating topic {}: {}", rd_kafka_topic_result_name(results[i]), rd_kafka_err2str(e)));
        }
      }
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  for (auto* nt : nts) rd_kafka_NewTopic_destroy(nt);
  return st;
}

absl::Status KafkaSink::Produce(const std::string& topic, std::string_view key, std::string_view payload) {
  while (true) {
    const auto e =
        rd_kafka_producev(rep_->rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_KEY(key.data(), key.size()),
                          RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(rep_->rk, 10);
      continue;
    }
    return absl::UnavailableError(fmt::format("produce to {}: {}", topic, rd_kafka_err2str(e)));
  }
  rd_kafka_poll(rep_->rk, 0);
  return absl::OkStatus();
}

absl::Status KafkaSink::Flush(int timeout_ms) {
  const auto e = rd_kafka_flush(rep_->rk, timeout_ms);
  if (e) return absl::DeadlineExceededError(fmt::format("flush: {} records still queued", rd_kafka_outq_len(rep_->rk)));
  if (rep_->failures > 0)
    return absl::UnavailableError(fmt::format("{} records were not delivered", rep_->failures.load()));
  return absl::OkStatus();
}

uint64_t KafkaSink::delivery_failures() const { return rep_->failures.load(); }

}  // namespace kpistream::gen
