// Test harness for integration tests: real processes (the local Kafka broker,
// kpid, kpigen), their lifecycles, and small clients for gRPC, /metrics and
// Kafka. Test-only code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/security/credentials.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kpistream/v1/kpi.grpc.pb.h"

namespace kpistream::testing {

// Paths to the built binaries and scripts (set by CMake).
std::string KpidBin();
std::string KpigenBin();
std::string KafkaLocalScript();

// A fresh directory under the temp dir, removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process with stdout+stderr to a log file.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_path);
  ~Process();  // SIGKILLs the process if still running
  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Waits for exit; returns the exit code (128+signal if killed), or nullopt
  // on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  const std::string& log_path() const { return log_; }
  std::string LogTail(size_t bytes = 4000) const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_;
};

// A file's whole content ("" when it cannot be read).
std::string Slurp(const std::string& path);

// openssl's command line, as an operator would use it, in `dir`: a CA
// (ca.crt/key), a server certificate for 127.0.0.1 and localhost
// (server.crt/key), a client certificate from the same CA (client.crt/key),
// one from a CA nobody trusts (stranger.crt/key), and one from the CA that
// may only serve (serveronly.crt/key: extended key usage serverAuth).
// False on failure
// (log: dir/make-certs.log).
bool MakeCertificates(const std::string& dir);

// Runs a command to completion; returns exit code; output to log.
int RunToEnd(const std::vector<std::string>& argv, const std::string& log_path,
             std::chrono::seconds timeout = std::chrono::seconds(600));

// The local real Kafka broker (tools/kafka/kafka-local).
class KafkaBroker {
 public:
  explicit KafkaBroker(const std::string& dir);
  ~KafkaBroker();
  const std::string& bootstrap() const { return bootstrap_; }
  bool ok() const { return !bootstrap_.empty(); }
  std::string error() const { return error_; }
  // Stops the broker (SIGTERM) and brings it back on the same port with its
  // data (kafka-local stop / restart): a broker outage.
  bool Stop();
  bool Restart();

 private:
  std::string dir_;
  std::string bootstrap_;
  std::string error_;
};

// A local real schema registry (tools/registry/registry-local: Apicurio
// Registry, its Confluent-compatible API), stopped on destruction.
class SchemaRegistry {
 public:
  explicit SchemaRegistry(const std::string& dir);
  ~SchemaRegistry();
  bool Start(int port = 0);
  // The Confluent-compatible base URL (http://127.0.0.1:PORT/apis/ccompat/v7).
  const std::string& url() const { return url_; }
  bool ok() const { return !url_.empty(); }
  std::string error() const { return error_; }
  // Stops it (an outage). Restart brings a new one up on the same port,
  // empty (its storage is in memory).
  void Stop();
  bool Restart();

 private:
  std::string dir_, url_, error_;
  int port_ = 0;
};

// A kpid process with a config written for the given broker and topics.
struct KpidOptions {
  std::string brokers;
  std::string topic_prefix;
  std::string group_id;
  std::string state_dir;
  std::string work_dir;
  int commit_interval_ms = 200;
  bool changelog = false;  // kafka.changelog
  std::string grpc_listen = "127.0.0.1:0";
  std::string extra_config;  // appended to the generated kpid.yaml
  std::string kafka_extra;   // lines added to its kafka section, e.g. "  changelog_sweep_interval: 1s\n"
  // Set: kafka.sources (as `kpigen --print-source` prints it) instead of
  // kafka.topics for the prefix.
  std::string kafka_sources;
  // librdkafka settings added to kafka.properties, e.g. {{"queued.min.messages", "1000"}}.
  std::vector<std::pair<std::string, std::string>> kafka_properties;
  std::vector<std::string> extra_args;
  // How stub() and health() connect (null: plaintext), e.g. TLS.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

// Writes <work_dir>/kpid.yaml for the options; returns its path.
std::string WriteKpidConfig(const KpidOptions& o);

class Kpid {
 public:
  explicit Kpid(const KpidOptions& o);
  // Waits for the listen-info file; false on timeout or early exit.
  bool WaitStarted(std::chrono::seconds timeout = std::chrono::seconds(60));
  bool WaitServing(std::chrono::seconds timeout = std::chrono::seconds(60));
  Process& process() { return *proc_; }
  v1::KpiService::Stub& stub() { return *stub_; }
  grpc::health::v1::Health::Stub& health() { return *health_; }
  std::string metrics_address() const { return metrics_; }
  std::string grpc_address() const { return grpc_; }
  // Scrapes /metrics; empty on failure.
  std::string Scrape() const;

 private:
  KpidOptions o_;
  std::string info_path_;
  std::unique_ptr<Process> proc_;
  std::string grpc_, metrics_;
  std::unique_ptr<v1::KpiService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// Waits until kpid owns `partitions` partitions and every lag has read 0
// for 3 s on end (the high-watermark probe's period): everything produced
// is committed and queryable. Prints the lags on timeout.
bool WaitCaughtUp(Kpid& kpid, std::chrono::seconds timeout, int partitions = 12);

// A free TCP port on 127.0.0.1 (bound and released; racy only in theory).
int FreePort();
// HTTP/1.0 GET of http://host:port<path>; the body, or empty on failure.
std::string HttpGet(const std::string& host_port, const std::string& path);
// Any method, empty request body; status 0 when no HTTP answer came.
struct HttpResponse {
  int status = 0;
  std::string body;
};
HttpResponse HttpCall(const std::string& host_port, const std::string& method, const std::string& path);

// A test-side HTTP receiver: answers every request 200 and keeps the bodies
// of POSTs (what Alertmanager's webhook or kpid's webhook delivered).
class HttpSink {
 public:
  HttpSink();
  ~HttpSink();
  std::string url() const;  // http://127.0.0.1:port/
  std::vector<std::string> Bodies() const;
  // The header block of each POST, beside Bodies() (same order).
  std::vector<std::string> Headers() const;

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

// A real Alertmanager (Debian's prometheus-alertmanager) on a free loopback
// port, routing every alert to a webhook receiver, grouped by alertname,
// with short group_wait/group_interval and send_resolved.
class Alertmanager {
 public:
  // `web_config`: a --web.config.file for it (TLS, basic auth), or "".
  Alertmanager(const std::string& dir, const std::string& webhook_url, int port, const std::string& web_config = "");
  ~Alertmanager();
  bool WaitReady(std::chrono::seconds timeout = std::chrono::seconds(30));
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + address(); }
  Process& process() { return *proc_; }

 private:
  int port_;
  bool tls_ = false;
  std::unique_ptr<Process> proc_;
};

// A real Prometheus (Debian's prometheus) on a free loopback port, scraping
// the given targets every second and loading the given rule files.
class Prometheus {
 public:
  // `scrape_extra`: lines added to the scrape job (scheme, tls_config,
  // basic_auth), indented as the job's keys.
  Prometheus(const std::string& dir, const std::vector<std::string>& targets,
             const std::vector<std::string>& rule_files, int port, const std::string& scrape_extra = "");
  ~Prometheus();
  bool WaitReady(std::chrono::seconds timeout = std::chrono::seconds(30));
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *proc_; }
  // GET /api/v1/query?query=... (URL-encoded here): the response body (JSON).
  std::string Query(const std::string& promql) const;

 private:
  int port_;
  std::unique_ptr<Process> proc_;
};

// Sum of a metric's samples whose labels contain every given pair (an
// empty value also matches a sample without the label, as in PromQL).
double MetricSum(const std::string& exposition, const std::string& name,
                 const std::map<std::string, std::string>& labels = {});
// Number of samples of a metric (whose labels contain every given pair;
// an empty value also matches a sample without the label, as in PromQL).
int MetricCount(const std::string& exposition, const std::string& name);
int MetricCount(const std::string& exposition, const std::string& name,
                const std::map<std::string, std::string>& labels);

// kpigen's ground-truth file.
struct Truth {
  int64_t window_start = 0, window_end = 0;
  uint64_t records = 0, good = 0;
  std::map<std::string, uint64_t> rejected;
  struct Value {
    std::optional<double> value;
    bool approx = false;  // from a sketch in kpid: compare within its bound
  };
  std::map<std::pair<std::string, std::string>, Value> kpis;  // (kpi, window)
};
std::optional<Truth> ReadTruth(const std::string& path);

// Reads every record of a topic from the beginning; returns the value of the
// given header per record.
std::vector<std::string> ReadTopicHeader(const std::string& brokers, const std::string& topic,
                                         const std::string& header, size_t expected, std::chrono::seconds timeout);

// Deletes every record currently in the topic's partitions (Kafka's
// DeleteRecords up to the high watermark), as retention would.
bool DeleteAllRecords(const std::string& brokers, const std::string& topic, int partitions);

// Sets one topic config (Kafka AlterConfigs), e.g. max.message.bytes.
bool SetTopicConfig(const std::string& brokers, const std::string& topic, const std::string& name,
                    const std::string& value);

// Produces one record (up to 16 MiB) and waits for Kafka to acknowledge it.
bool ProduceRecord(const std::string& brokers, const std::string& topic, const std::string& key,
                   const std::string& payload);

// Creates topics (Kafka CreateTopics) with this many partitions each, and
// these topic configs (e.g. {{"cleanup.policy", "compact"}}).
bool CreateTopics(const std::string& brokers, const std::vector<std::string>& topics, int partitions,
                  const std::map<std::string, std::string>& configs = {});

// Every committed record (read_committed) of one partition of a topic, from
// its log start to its end: key, and value (nullopt for a tombstone).
struct KeyedRecord {
  std::string key;
  std::optional<std::string> value;
};
std::optional<std::vector<KeyedRecord>> ReadPartition(const std::string& brokers, const std::string& topic,
                                                      int32_t partition, std::chrono::seconds timeout);

// Produces records to partition 0 of a topic in one Kafka transaction
// (librdkafka's transactional producer, id `transactional_id`), then commits
// it or aborts it. The transaction's marker takes an offset of its own.
bool ProduceTransaction(const std::string& brokers, const std::string& transactional_id, const std::string& topic,
                        const std::vector<std::string>& payloads, bool commit);

// Every record of a topic, from the beginning: its payload and headers.
struct TopicRecord {
  std::string payload;
  std::map<std::string, std::string> headers;
};
std::vector<TopicRecord> ReadTopic(const std::string& brokers, const std::string& topic, size_t at_least,
                                   std::chrono::seconds timeout);

}  // namespace kpistream::testing
