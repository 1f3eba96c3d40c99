// The ingest ceiling: a bare librdkafka consumer-group member that reads the
// given topics from the first offset to the last and discards every record.
// Same consumer settings as kpid (cooperative-sticky, manual offsets), so the
// ratio kpid/ceiling is what kpid's own work costs.
//   kpistream_ceiling --brokers B --topics t1,t2,t3 --expect N
// Prints one JSON line: records, seconds (first assignment to the last
// record), events_per_second, cpu_seconds.
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <optional>

int main(int argc, char** argv) {
  CLI::App app{"bare librdkafka consumer: the ingest ceiling"};
  std::string brokers, group = "ceiling";
  std::vector<std::string> topics;
  uint64_t expect = 0;
  app.add_option("--brokers", brokers)->required();
  app.add_option("--topics", topics)->required()->delimiter(',');
  app.add_option("--expect", expect, "stop after this many records")->required();
  app.add_option("--group", group)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : std::initializer_list<std::pair<const char*, std::string>>{
           {"bootstrap.servers", brokers},
           {"group.id", group},
           {"partition.assignment.strategy", "cooperative-sticky"},
           {"enable.auto.commit", "false"},
           {"enable.auto.offset.store", "false"},
           {"auto.offset.reset", "earliest"},
           {"queued.max.messages.kbytes", "131072"},
           {"fetch.max.bytes", "52428800"}}) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      fmt::print(stderr, "{}\n", err);
      return 2;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!rk) {
    fmt::print(stderr, "{}\n", err);
    return 1;
  }
  rd_kafka_poll_set_consumer(rk);
  auto* subs = rd_kafka_topic_partition_list_new(static_cast<int>(topics.size()));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(subs, t.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);

  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> first;
  uint64_t n = 0, bytes = 0;
  const auto deadline = Clock::now() + std::chrono::minutes(10);
  while (n < expect && Clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (!m) continue;
    if (!m->err) {
      if (!first) first = Clock::now();
      ++n;
      bytes += m->len;
    }
    rd_kafka_message_destroy(m);
  }
  const double secs = first ? std::chrono::duration<double>(Clock::now() - *first).count() : 0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  fmt::print(
      "{{\"records\": {}, \"bytes\": {}, \"seconds\": {:.3f}, \"events_per_second\": {:.0f}, "
      "\"cpu_seconds\": {:.3f}, \"peak_rss_kb\": {}}}\n",
      n, bytes, secs, secs > 0 ? static_cast<double>(n) / secs : 0, cpu, ru.ru_maxrss);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return n >= expect ? 0 : 1;
}
