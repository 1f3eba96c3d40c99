// kpid's config file: the alerting and retention sections, and that every
// error names file:line:col and what to fix.
#include "services/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace kpistream::services {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("kpid-config-test-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml"))
                .string();
  }
  void TearDown() override { std::filesystem::remove(path_); }
  absl::StatusOr<KpidConfig> Load(const std::string& extra) {
    std::ofstream(path_) << "kafka:\n  brokers: localhost:9092\n  topics: {campaign: c, product: p, crm: r}\n" << extra;
    return LoadKpidConfig(path_);
  }
  std::string path_;
};

TEST_F(ConfigTest, AlertingSection) {
  auto c = Load(R"yaml(alerting:
  alertmanagers: ["http://am-0:9093", "http://am-1:9093"]
  webhooks: [https://hooks.example/k]
  evaluation_interval: 30s
  resend_interval: 2m
  clock: event_time
  generator_url: http://kpid:9464/metrics
)yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->notifier.alertmanagers.size(), 2u);
  EXPECT_EQ(c->notifier.alertmanagers[0].url, "http://am-0:9093");
  EXPECT_EQ(c->notifier.alertmanagers[1].url, "http://am-1:9093");
  ASSERT_EQ(c->notifier.webhooks.size(), 1u);
  EXPECT_EQ(c->notifier.webhooks[0].url, "https://hooks.example/k");
  EXPECT_EQ(c->alerter.eval_interval_ms, 30000);
  EXPECT_EQ(c->notifier.resend_interval_ms, 120000);
  EXPECT_TRUE(c->alert_clock_event_time);
  EXPECT_EQ(c->notifier.generator_url, "http://kpid:9464/metrics");
  // Alertmanager keeps a firing alert 4 intervals past the last send.
  EXPECT_EQ(c->notifier.ends_at_ahead_ms, 4 * 120000);
}

TEST_F(ConfigTest, MinFreeDisk) {
  auto c = Load("min_free_disk_mb: 512\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->min_free_disk_bytes, 512ull << 20);
  EXPECT_EQ(Load("")->min_free_disk_bytes, 64ull << 20);
  auto bad = Load("min_free_disk_mb: -1\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":4:19: min_free_disk_mb '-1' must be a whole number from 0"),
            std::string::npos)
      << bad.status();
}

TEST_F(ConfigTest, DedupWindow) {
  EXPECT_EQ(Load("")->engine.dedup_window_ms, 0);
  EXPECT_EQ(Load("dedup_window: 15m\n")->engine.dedup_window_ms, 15 * 60 * 1000);
  EXPECT_EQ(Load("dedup_window: off\n")->engine.dedup_window_ms, 0);
  auto bad = Load("dedup_window: soon\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":4:15: dedup_window: "), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("(or 'off')"), std::string::npos) << bad.status();
}

// Issue 18: typos anywhere are errors, wrong types say where and what was
// expected, and every error of the file is reported at once.
TEST_F(ConfigTest, UnknownKeysAtEveryLevelAndEveryErrorReported) {
  std::ofstream(path_) << "kafka:\n  brokers: localhost:9092\n  group-id: g\n  dlq_topc: d\n"
                          "  topics: {campaign: c}\ncommit_interval: fastms\nmax_future: soon\nretention: {fine: 3w}\n";
  auto r = LoadKpidConfig(path_);
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  for (const std::string want : {":3:3: unknown key 'group-id'", ":4:3: unknown key 'dlq_topc'",
                                 ":6:18: commit_interval: bad duration \"fastms\"", ":7:13: max_future: bad duration",
                                 ":8:19: retention.fine: bad duration"}) {
    EXPECT_NE(msg.find(path_ + want), std::string::npos) << want << "\n" << msg;
  }
  EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 4) << msg;
  // A key given twice: yaml-cpp would read the first and drop the second.
  std::ofstream(path_) << "kafka:\n  brokers: a:9092\n  topics: {campaign: c}\n  brokers: b:9092\n";
  auto dup = LoadKpidConfig(path_);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find(":4:3: duplicate key 'brokers' (first at line 2)"), std::string::npos)
      << dup.status();
}

// Declared sources (ingest/source_mapping.h): a valid one becomes a
// binding with its compiled mapping; every mistake is an error at its line.
TEST_F(ConfigTest, DeclaredSources) {
  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  sources:\n"
                          "    - topic: ads.events\n"
                          "      family: campaign\n"
                          "      format: json\n"
                          "      event_time: {field: ts, unit: ms}\n"
                          "      type: {field: kind, values: {clk: click, imp: impression}}\n"
                          "      fields:\n"
                          "        campaign_id: cid\n"
                          "        cost: {field: cost_micros, scale: 0.000001}\n"
                          "        channel: {field: meta.channel, default: unknown}\n"
                          "    - topic: crm.deals\n"
                          "      family: crm\n"
                          "      event_id: id\n"
                          "      event_time: {record_timestamp: true}\n"
                          "      type: {constant: opportunity_won}\n"
                          "      fields: {origin_time: {field: created, unit: s, required: true}}\n";
  auto c = LoadKpidConfig(path_);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->engine.topics.size(), 2u);
  EXPECT_EQ(c->engine.topics[0].topic, "ads.events");
  ASSERT_NE(c->engine.topics[0].mapping, nullptr);
  EXPECT_EQ(c->engine.topics[0].mapping->spec().fields.at("cost").scale, 0.000001);
  EXPECT_EQ(c->engine.topics[1].family, kpi::Family::kCrm);
  EXPECT_TRUE(c->engine.topics[1].mapping->spec().event_time.record_timestamp);

  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  topics: {campaign: ads.events}\n"
                          "  sources:\n"
                          "    - topic: ads.events\n"
                          "      family: campaign\n"
                          "      format: csv\n"
                          "      event_time: {field: ts, unit: minutes}\n"
                          "      type: {field: kind, values: {clk: tap}}\n"
                          "      fields:\n"
                          "        cpc: x\n"
                          "        cost: {field: c, scale: lots}\n"
                          "      color: red\n";
  auto bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const std::string want : {":7:15: unknown format 'csv' (supported: json, avro, protobuf)",
                                 ":8:37: unit 'minutes' must be one of", ":9:41: 'tap' is not a campaign event type",
                                 ":11:9: campaign events have no field 'cpc'", ":12:33: scale 'lots' must be a number",
                                 ":13:7: unknown key 'color'", "topic ads.events is also a declared source"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << want << "\n" << msg;
  }
}

TEST_F(ConfigTest, TopicsAreNamesOrPatternsCheckedAtTheirLine) {
  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  topics: {campaign: \"^kpi\\\\.campaign\\\\..*\", product: kpi product}\n";
  auto bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  std::string msg(bad.status().message());
  EXPECT_NE(msg.find(":3:55: topic 'kpi product' has a character Kafka refuses"), std::string::npos) << msg;

  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  sources:\n"
                          "    - topic: \"^ads\\\\.(eu|us\"\n"
                          "      family: campaign\n"
                          "      event_time: {record_timestamp: true}\n"
                          "      type: {constant: click}\n";
  bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  msg = std::string(bad.status().message());
  EXPECT_NE(msg.find(":4:14: topic pattern ^ads\\.(eu|us is not a POSIX extended regular expression"),
            std::string::npos)
      << msg;

  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  dlq_topic: kpi,dlq\n"
                          "  topics: {campaign: kpi.campaign}\n";
  bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  msg = std::string(bad.status().message());
  EXPECT_NE(msg.find(":3:14: topic 'kpi,dlq' has a character Kafka refuses"), std::string::npos) << msg;

  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  topics: {campaign: \"^kpi\\\\.campaign\\\\..*\"}\n";
  auto ok = LoadKpidConfig(path_);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->engine.topics.at(0).topic, "^kpi\\.campaign\\..*");
}

TEST_F(ConfigTest, AvroSourcesCheckTheirMappingAgainstTheSchema) {
  const std::string schema = path_ + ".avsc";
  std::ofstream(schema) << R"({"type": "record", "name": "Deal", "fields": [
    {"name": "id", "type": "string"}, {"name": "at", "type": "long"},
    {"name": "account", "type": {"type": "record", "name": "A", "fields": [{"name": "id", "type": "string"}]}},
    {"name": "blob", "type": "bytes"}]})";
  const std::string head =
      "kafka:\n"
      "  brokers: localhost:9092\n"
      "  sources:\n"
      "    - topic: crm.deals\n"
      "      family: crm\n"
      "      format: avro\n"
      "      schema_file: " +
      schema +
      "\n"
      "      event_id: id\n"
      "      event_time: {field: at, unit: ms}\n"
      "      type: {constant: opportunity_won}\n";
  std::ofstream(path_) << head << "      fields: {account_id: account.id}\n";
  auto c = LoadKpidConfig(path_);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_NE(c->engine.topics.at(0).mapping->avro_layout(), nullptr);

  std::ofstream(path_) << head << "      fields: {account_id: account.name, amount: blob}\n";
  auto bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  std::string msg(bad.status().message());
  EXPECT_NE(msg.find(":7:20: source crm.deals: schema " + schema), std::string::npos) << msg;
  EXPECT_NE(msg.find("the Avro record A has no field 'name' (fields: id)"), std::string::npos) << msg;

  std::ofstream(path_) << "kafka:\n"
                          "  brokers: localhost:9092\n"
                          "  sources:\n"
                          "    - topic: a\n"
                          "      family: crm\n"
                          "      format: avro\n"
                          "      event_time: at\n"
                          "      type: {constant: lead}\n"
                          "    - topic: b\n"
                          "      family: crm\n"
                          "      schema_file: x.avsc\n"
                          "      event_time: at\n"
                          "      type: {constant: lead}\n"
                          "    - topic: c\n"
                          "      family: crm\n"
                          "      format: avro\n"
                          "      schema_registry: registry:8081\n"
                          "      event_time: at\n"
                          "      type: {constant: lead}\n";
  bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  msg = std::string(bad.status().message());
  for (const std::string want : {":4:7: format avro needs its writer schema",
                                 ":11:20: schema_file is for format avro (this source's format is json)",
                                 ":17:24: schema_registry url 'registry:8081' must start with http://"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << want << "\n" << msg;
  }
  std::filesystem::remove(schema);
}

TEST_F(ConfigTest, MaxFutureAndCommitInterval) {
  EXPECT_EQ(Load("")->engine.max_future_ms, 10 * 60 * 1000);
  EXPECT_EQ(Load("max_future: 1h\n")->engine.max_future_ms, 3600 * 1000);
  EXPECT_EQ(Load("commit_interval: 150ms\n")->engine.commit_interval_ms, 150);
  EXPECT_EQ(Load("commit_interval: 2s\n")->engine.commit_interval_ms, 2000);
}

TEST(ConfigKindTest, ToldApartByStructure) {
  EXPECT_TRUE(LooksLikeKpidConfig("kafka:\n  brokers: b\n"));
  EXPECT_FALSE(LooksLikeKpidConfig("measures:\n  c: {family: campaign, aggregation: count}\n# kafka: in a comment\n"));
  EXPECT_FALSE(LooksLikeKpidConfig("measures:\n  c: {family: campaign, help: \"kafka: x\", aggregation: count}\n"));
}

TEST_F(ConfigTest, AlertingErrorsNameTheLineAndTheFix) {
  struct Case {
    std::string yaml;
    std::string where;
    std::string what;
  };
  const Case cases[] = {
      {"alerting:\n  alertmanagers: [am-0:9093]\n", ":5:19:", "must be an http:// or https:// URL"},
      {"alerting:\n  webhooks: http://x\n", ":5:13:", "must be a list of URLs"},
      {"alerting:\n  evaluation_interval: 100ms\n", ":5:24:", "bad duration"},
      {"alerting:\n  resend_interval: 0s\n", ":5:20:", "bad duration \"0s\""},
      {"alerting:\n  clock: tsc\n", ":5:10:", "clock must be wall or event_time"},
      {"alerting:\n  pager: yes\n", ":5:3:", "unknown key 'pager'"},
      {"alerting: [1]\n", ":4:11:", "alerting must be a map"},
  };
  for (const auto& c : cases) {
    auto r = Load(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(path_ + c.where), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
  }
}

TEST_F(ConfigTest, GrpcAndWatchSections) {
  auto c = Load(
      "grpc:\n  tls: {cert_file: tls/server.crt, key_file: /etc/tls/server.key, client_ca_file: ca.crt}\n"
      "  tokens_file: tokens.yaml\n  max_batch: 20\nwatch: {interval: 2s, max_streams: 50, max_queries: 5}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto dir = std::filesystem::path(path_).parent_path();
  EXPECT_EQ(c->grpc_tls.cert_file, (dir / "tls/server.crt").string());  // relative to the config file
  EXPECT_EQ(c->grpc_tls.key_file, "/etc/tls/server.key");
  EXPECT_EQ(c->grpc_tls.client_ca_file, (dir / "ca.crt").string());
  EXPECT_EQ(c->tokens_file, (dir / "tokens.yaml").string());
  EXPECT_EQ(c->max_batch, 20u);
  EXPECT_EQ(c->watch.interval_ms, 2000);
  EXPECT_EQ(c->watch.max_streams, 50u);
  EXPECT_EQ(c->watch.max_queries, 5u);

  auto bad = Load("grpc:\n  tls: {cert_file: a.crt}\n  token_file: t.yaml\nwatch: {interval: 10ms}\n");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  EXPECT_NE(msg.find("needs both cert_file and key_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token_file"), std::string::npos) << msg;  // unknown key, reported with the others
  EXPECT_NE(msg.find("watch.interval must be between 100ms and 1h"), std::string::npos) << msg;
}

TEST_F(ConfigTest, AlertTargetsWithHttpConfig) {
  auto c = Load(R"yaml(alerting:
  alertmanagers:
    - http://am-0:9093
    - url: https://am-1:9093
      http_config:
        basic_auth: {username: kpid, password_file: secrets/am}
        tls_config: {ca_file: ca.crt, cert_file: c.crt, key_file: /k/c.key}
  webhooks:
    - url: https://hooks.example/k
      http_config:
        authorization: {credentials: s3cret}
        headers: {X-Scope-OrgID: tenant-1}
)yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto dir = std::filesystem::path(path_).parent_path();
  ASSERT_EQ(c->notifier.alertmanagers.size(), 2u);
  EXPECT_EQ(c->notifier.alertmanagers[0].url, "http://am-0:9093");
  const auto& am = c->notifier.alertmanagers[1];
  EXPECT_EQ(am.url, "https://am-1:9093");
  EXPECT_EQ(am.http.basic_username, "kpid");
  EXPECT_EQ(am.http.basic_password_file, (dir / "secrets/am").string());
  EXPECT_EQ(am.http.ca_file, (dir / "ca.crt").string());
  EXPECT_EQ(am.http.key_file, "/k/c.key");
  ASSERT_EQ(c->notifier.webhooks.size(), 1u);
  const auto& hook = c->notifier.webhooks[0];
  EXPECT_EQ(hook.http.authorization_type, "Bearer");
  EXPECT_EQ(hook.http.credentials, "s3cret");
  EXPECT_EQ(hook.http.headers, (std::vector<std::pair<std::string, std::string>>{{"X-Scope-OrgID", "tenant-1"}}));

  auto bad = Load(R"yaml(alerting:
  alertmanagers:
    - url: ftp://am
    - url: https://am
      http_config:
        basic_auth: {username: a, password: p, password_file: f}
        authorization: {type: Bearer}
        tls_config: {cert_file: c.crt}
        proxy_url: http://proxy
        headers: {Authorization: x}
)yaml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  EXPECT_NE(msg.find("'ftp://am' must be an http:// or https:// URL"), std::string::npos) << msg;
  EXPECT_NE(msg.find("give password or password_file, not both"), std::string::npos) << msg;
  EXPECT_NE(msg.find("authorization needs credentials or credentials_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("give authorization or basic_auth, not both"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs both cert_file and key_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("proxy_url"), std::string::npos) << msg;
  EXPECT_NE(msg.find("header Authorization is set by kpid"), std::string::npos) << msg;
}

TEST_F(ConfigTest, WebConfigFileIsLoadedWithTheConfig) {
  const auto web = std::filesystem::path(path_).parent_path() / ("web-" + std::to_string(::getpid()) + ".yml");
  const std::string hash = "$2b$04$abcdefghijklmnopqrstuu5Ttz3VhjGm3S1FmKcUeGqgNlXb/wWSm";
  std::ofstream(web) << "basic_auth_users: {prometheus: " << hash << "}\n";
  auto c = Load("http: {web_config_file: " + web.filename().string() + "}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->web_config_file, web.string());
  EXPECT_EQ(c->web.basic_auth_users.at("prometheus"), hash);
  std::ofstream(web) << "basic_auth_users: {prometheus: not-a-hash}\n";  // its own file:line
  auto bad = Load("http: {web_config_file: " + web.filename().string() + "}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(web.string() + ":1:"), std::string::npos) << bad.status();
  std::filesystem::remove(web);
  auto missing = Load("http: {web_config_file: nowhere.yml}\n");
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace kpistream::services

namespace kpistream::services {
namespace {

TEST_F(ConfigTest, ChangelogSweepInterval) {
  const std::string kafka =
      "kafka:\n  brokers: localhost:9092\n  topics: {campaign: c, product: p, crm: r}\n  changelog: true\n";
  std::ofstream(path_) << kafka;
  auto defaults = LoadKpidConfig(path_);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->engine.changelog_sweep_interval_ms, 3600 * 1000);
  std::ofstream(path_) << kafka << "  changelog_sweep_interval: 10m\n";
  auto set = LoadKpidConfig(path_);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->engine.changelog_sweep_interval_ms, 600 * 1000);
  std::ofstream(path_) << kafka << "  changelog_sweep_interval: 100ms\n";
  auto bad = LoadKpidConfig(path_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find(":5:"), std::string::npos) << bad.status();
  EXPECT_NE(std::string(bad.status().message()).find("between 1s and 7d"), std::string::npos) << bad.status();
}

TEST_F(ConfigTest, ClusterSectionForReplicas) {
  const std::string kafka =
      "kafka:\n  brokers: localhost:9092\n  topics: {campaign: c, product: p, crm: r}\n  changelog: true\n";
  std::ofstream(path_) << kafka << R"yaml(cluster:
  peers: [kpid-0.kpistream:50051, "kpid-1.kpistream:50051"]
  peers_dns: kpistream-headless:50051
  max_wait: 3s
  open_timeout: 500ms
  tls: {ca_file: ca.crt, cert_file: tls.crt, key_file: tls.key, server_name: kpistream}
  token_file: /var/run/secrets/peer-token
)yaml";
  auto c = LoadKpidConfig(path_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.peers, (std::vector<std::string>{"kpid-0.kpistream:50051", "kpid-1.kpistream:50051"}));
  EXPECT_EQ(c->cluster.peers_dns, "kpistream-headless:50051");
  EXPECT_EQ(c->cluster.max_wait_ms, 3000);
  EXPECT_EQ(c->cluster.open_timeout_ms, 500);
  const auto folder = std::filesystem::path(path_).parent_path();
  EXPECT_EQ(c->cluster.tls_ca_file, (folder / "ca.crt").string());  // relative to the config file
  EXPECT_EQ(c->cluster.tls_key_file, (folder / "tls.key").string());
  EXPECT_EQ(c->cluster.tls_server_name, "kpistream");
  EXPECT_EQ(c->cluster.token_file, "/var/run/secrets/peer-token");

  // Without changelogs there are no owners to ask; every mistake at its line.
  auto bad = Load(R"yaml(cluster:
  peers: [kpid-0, {a: b}]
  peers_dns: headless
  max_wait: 2m
  tls: {cert_file: tls.crt}
  colour: blue
)yaml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* want :
       {"each of cluster.peers is a host:port", "cluster.peers_dns is a name:port", "cluster.max_wait must be between",
        "cluster.tls needs ca_file", "both cert_file and key_file", "colour", "cluster needs kafka.changelog: true"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << want << "\n" << msg;
  }
  EXPECT_NE(msg.find(":8:"), std::string::npos) << "errors name their line: " << msg;
  std::ofstream(path_) << kafka << "cluster:\n  peers_dns: kpistream-headless:50051\n  tls: {ca_file: ca.crt}\n";
  auto unnamed = LoadKpidConfig(path_);
  ASSERT_FALSE(unnamed.ok());
  EXPECT_NE(unnamed.status().message().find("needs server_name with peers_dns"), std::string::npos) << unnamed.status();
  std::ofstream(path_) << kafka << "cluster:\n  peers_dns: dns:///kpistream-headless:50051\n";
  auto scheme = LoadKpidConfig(path_);
  ASSERT_FALSE(scheme.ok());
  EXPECT_NE(scheme.status().message().find("no scheme"), std::string::npos) << scheme.status();
  auto empty = Load("cluster: {max_wait: 1s}\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("cluster needs peers"), std::string::npos) << empty.status();
}

}  // namespace
}  // namespace kpistream::services
