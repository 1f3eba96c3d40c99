#include "ingest/kafka_conf.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <span>
#include <string_view>

#include "ingest/topic_match.h"

namespace kpistream::ingest {

namespace {

absl::Status SetConf(rd_kafka_conf_t* conf, const std::string& k, const std::string& v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    return absl::InvalidArgumentError(fmt::format("kafka setting {}={}: {}", k, v, err));
  }
  return absl::OkStatus();
}

// librdkafka properties that apply to one client type only (the C and P
// rows of librdkafka's CONFIGURATION.md, 2.0): kafka.properties goes to the
// consumer and the dead-letter producer alike, minus what the other type
// would only warn about ("... is a consumer property and will be ignored by
// this producer instance").
constexpr std::string_view kConsumerOnly[] = {"group.id",
                                              "group.instance.id",
                                              "partition.assignment.strategy",
                                              "session.timeout.ms",
                                              "heartbeat.interval.ms",
                                              "group.protocol.type",
                                              "group.protocol",
                                              "group.remote.assignor",
                                              "coordinator.query.interval.ms",
                                              "max.poll.interval.ms",
                                              "enable.auto.commit",
                                              "auto.commit.interval.ms",
                                              "enable.auto.offset.store",
                                              "queued.min.messages",
                                              "queued.max.messages.kbytes",
                                              "fetch.wait.max.ms",
                                              "fetch.queue.backoff.ms",
                                              "fetch.message.max.bytes",
                                              "max.partition.fetch.bytes",
                                              "fetch.max.bytes",
                                              "fetch.min.bytes",
                                              "fetch.error.backoff.ms",
                                              "offset.store.method",
                                              "isolation.level",
                                              "enable.partition.eof",
                                              "check.crcs",
                                              "allow.auto.create.topics",
                                              "auto.offset.reset",
                                              "consume.callback.max.messages",
                                              "auto.commit.enable",
                                              "offset.store.path",
                                              "offset.store.sync.interval.ms"};
constexpr std::string_view kProducerOnly[] = {"transactional.id",
                                              "transaction.timeout.ms",
                                              "enable.idempotence",
                                              "enable.gapless.guarantee",
                                              "queue.buffering.max.messages",
                                              "queue.buffering.max.kbytes",
                                              "queue.buffering.max.ms",
                                              "linger.ms",
                                              "message.send.max.retries",
                                              "retries",
                                              "queue.buffering.backpressure.threshold",
                                              "compression.codec",
                                              "compression.type",
                                              "compression.level",
                                              "batch.num.messages",
                                              "batch.size",
                                              "delivery.report.only.error",
                                              "sticky.partitioning.linger.ms",
                                              "request.required.acks",
                                              "acks",
                                              "request.timeout.ms",
                                              "message.timeout.ms",
                                              "delivery.timeout.ms",
                                              "queuing.strategy",
                                              "produce.offset.report",
                                              "partitioner",
                                              "msg_order_cmp"};

bool Listed(std::string_view key, std::span<const std::string_view> list) {
  return std::find(list.begin(), list.end(), key) != list.end();
}

// kafka.properties minus the other client type's, into a new conf.
absl::StatusOr<RdConf> FromProperties(const EngineOptions& options, std::span<const std::string_view> other_only) {
  RdConf conf(rd_kafka_conf_new());
  for (const auto& [k, v] : options.kafka_properties) {
    if (Listed(k, other_only)) continue;
    if (auto s = SetConf(conf.get(), k, v); !s.ok()) return s;
  }
  RouteKafkaLogs(conf.get());
  return conf;
}

// syslog(3) severities, as librdkafka uses them.
spdlog::level::level_enum LevelOf(int syslog_level) {
  if (syslog_level <= 2) return spdlog::level::critical;  // emerg, alert, crit
  if (syslog_level == 3) return spdlog::level::err;
  if (syslog_level == 4) return spdlog::level::warn;
  if (syslog_level <= 6) return spdlog::level::info;  // notice, info
  return spdlog::level::debug;
}

}  // namespace

absl::StatusOr<RdConf> ConsumerConf(const EngineOptions& options) {
  auto cconf = FromProperties(options, kProducerOnly);
  if (!cconf.ok()) return cconf.status();
  const std::pair<const char*, std::string> consumer_settings[] = {
      {"bootstrap.servers", options.brokers},
      {"group.id", options.group_id},
      {"partition.assignment.strategy", "cooperative-sticky"},
      // Offsets live in the state store (invariant 1); Kafka's are advisory.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      // A stored offset that no longer exists must fail loudly, never skip.
      {"auto.offset.reset", "error"},
      {"enable.partition.eof", "false"},
      // Records of aborted transactions are never applied (librdkafka's
      // default, stated because StepOverUnreadOffsets relies on it).
      {"isolation.level", "read_committed"},
      {"queued.max.messages.kbytes", std::to_string(std::max<size_t>(options.fetch_queue_bytes >> 10, 1024))},
      {"fetch.max.bytes", "52428800"},
  };
  for (const auto& [k, v] : consumer_settings) {
    // With changelogs, read_committed is what restores and the stable-offset
    // wait rest on: not overridable.
    const bool forced =
        std::string(k) == "bootstrap.servers" || (options.changelog && std::string(k) == "isolation.level");
    if (options.kafka_properties.count(k) && !forced) continue;
    if (auto s = SetConf(cconf->get(), k, v); !s.ok()) return s;
  }
  // A topic pattern must never read kpid's own dead letters back, nor
  // Kafka's internal topics: the consumer does not see them at all
  // (topic_match.h). An internal topic named exactly stays visible.
  if (std::any_of(options.topics.begin(), options.topics.end(),
                  [](const TopicBinding& b) { return IsTopicPattern(b.topic); })) {
    // Nor kpid's changelogs, "<group>.<topic>.changelog" (ingest/changelog.h).
    std::string changelogs = ExactTopicRegex(options.group_id);
    changelogs.pop_back();  // the '$'
    std::string hidden = ExactTopicRegex(options.dlq_topic) + "," + changelogs + "\\..*\\.changelog$";
    if (std::none_of(options.topics.begin(), options.topics.end(),
                     [](const TopicBinding& b) { return b.topic.starts_with("__"); })) {
      hidden += ",^__.*";
    }
    if (auto it = options.kafka_properties.find("topic.blacklist"); it != options.kafka_properties.end()) {
      hidden = it->second + "," + hidden;
    }
    if (auto s = SetConf(cconf->get(), "topic.blacklist", hidden); !s.ok()) return s;
  }
  return cconf;
}

absl::StatusOr<RdConf> ProducerConf(const EngineOptions& options) {
  auto pconf = FromProperties(options, kConsumerOnly);
  if (!pconf.ok()) return pconf.status();
  for (const auto& [k, v] :
       std::initializer_list<std::pair<const char*, std::string>>{{"bootstrap.servers", options.brokers},
                                                                  {"linger.ms", "5"},
                                                                  // Retry for as long as it takes: offsets never pass
                                                                  // an undelivered dead letter (DeadLetterQueue).
                                                                  {"message.timeout.ms", "0"}}) {
    if (options.kafka_properties.count(k) && std::string(k) != "bootstrap.servers") continue;
    if (auto s = SetConf(pconf->get(), k, v); !s.ok()) return s;
  }
  return pconf;
}

void RouteKafkaLogs(rd_kafka_conf_t* conf) {
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
    spdlog::log(LevelOf(level), "kafka {} {}: {}", rk ? rd_kafka_name(rk) : "-", fac, buf);
  });
}

}  // namespace kpistream::ingest
