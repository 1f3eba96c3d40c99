#include "services/demo.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "gen/generator.h"
#include "gen/kafka_sink.h"

namespace kpistream::services {

struct EmbeddedDemo::Rep {
  DemoOptions options;
  rd_kafka_t* host = nullptr;  // owns the mock cluster
  rd_kafka_mock_cluster_t* cluster = nullptr;
  std::string bootstrap;
  std::thread feeder;
  std::atomic<bool> stop{false};

  ~Rep() {
    stop = true;
    if (feeder.joinable()) feeder.join();
    if (cluster) rd_kafka_mock_cluster_destroy(cluster);
    if (host) rd_kafka_destroy(host);
  }

  std::string Topic(kpi::Family f) const {
    static constexpr const char* kNames[] = {"campaign", "product", "crm"};
    return options.topic_prefix + kNames[static_cast<int>(f)];
  }
  gen::GenOptions History(int64_t now_ms) const {
    gen::GenOptions back;
    back.seed = options.seed;
    back.count = options.backfill;
    back.start_ms = now_ms - options.backfill_span_s * 1000;
    back.span_ms = options.backfill_span_s * 1000;
    back.format = gen::Format::kMixed;
    return back;
  }
  // History first, before kpid subscribes, so 1h and 24h windows are not
  // empty and kpid reads it as the backlog it is (replaying: no alert
  // changes state from it).
  absl::Status Backfill(gen::KafkaSink* sink, int64_t now_ms) {
    gen::Generator history(History(now_ms));
    gen::Record r;
    for (uint64_t i = 0; i < options.backfill; ++i) {
      history.Next(&r);
      if (auto st = sink->Produce(Topic(r.family), r.key, r.payload); !st.ok()) return st;
    }
    return sink->Flush(30000);
  }
  void Feed(std::unique_ptr<gen::KafkaSink> sink, int64_t now_ms) {
    gen::Record r;
    gen::GenOptions live = History(now_ms);
    live.seed = options.seed + 1;
    live.live = true;
    live.bad_every = options.bad_every;
    gen::Generator g(live);
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; !stop; ++i) {
      g.Next(&r);
      if (auto st = sink->Produce(Topic(r.family), r.key, r.payload); !st.ok()) {
        spdlog::warn("demo: {}", std::string(st.message()));
      }
      std::this_thread::sleep_until(t0 + std::chrono::duration<double>(static_cast<double>(i + 1) / options.rate));
    }
    (void)sink->Flush(2000);
  }
};

EmbeddedDemo::EmbeddedDemo(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
EmbeddedDemo::~EmbeddedDemo() { Stop(); }

absl::StatusOr<std::unique_ptr<EmbeddedDemo>> EmbeddedDemo::Start(const DemoOptions& options) {
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
  rep->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rep->host) return absl::InternalError(fmt::format("demo: creating the mock cluster host: {}", err));
  rep->cluster = rd_kafka_mock_cluster_new(rep->host, 1);
  if (!rep->cluster) return absl::InternalError("demo: cannot create librdkafka's mock cluster");
  rep->bootstrap = rd_kafka_mock_cluster_bootstraps(rep->cluster);
  for (const char* f : {"campaign", "product", "crm"}) {
    const auto t = options.topic_prefix + f;
    if (auto e = rd_kafka_mock_topic_create(rep->cluster, t.c_str(), options.partitions, 1)) {
      return absl::InternalError(fmt::format("demo: creating topic {}: {}", t, rd_kafka_err2str(e)));
    }
  }
  rd_kafka_mock_topic_create(rep->cluster, "kpistream.dlq", 1, 1);
  auto sink = gen::KafkaSink::Open(rep->bootstrap, {{"enable.idempotence", "false"}, {"compression.codec", "none"}});
  if (!sink.ok()) return sink.status();
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  if (auto st = rep->Backfill(sink->get(), now_ms); !st.ok()) {
    return absl::Status(st.code(), fmt::format("demo: backfill: {}", std::string(st.message())));
  }
  rep->feeder = std::thread([r = rep.get(), s = std::move(*sink), now_ms]() mutable { r->Feed(std::move(s), now_ms); });
  return std::unique_ptr<EmbeddedDemo>(new EmbeddedDemo(std::move(rep)));
}

std::string EmbeddedDemo::bootstrap() const { return rep_->bootstrap; }

ingest::EngineOptions EmbeddedDemo::EngineOptions() const {
  ingest::EngineOptions o;
  o.brokers = rep_->bootstrap;
  o.group_id = "kpistream-demo";
  for (auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
    o.topics.push_back({rep_->Topic(f), f, ingest::PayloadFormat::kAuto});
  }
  return o;
}

void EmbeddedDemo::Stop() {
  rep_->stop = true;
  if (rep_->feeder.joinable()) rep_->feeder.join();
}

}  // namespace kpistream::services
