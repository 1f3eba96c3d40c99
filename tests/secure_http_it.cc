// The HTTP side behind passwords and TLS, with real parts: kpid's /metrics
// under Prometheus' web configuration file (bcrypt basic auth; then HTTPS
// with client certificates, switched on while kpid runs) scraped by a real
// Prometheus with basic_auth and tls_config, and kpid's alerts delivered
// with http_config credentials to a real Alertmanager that itself requires
// TLS and a password (--web.config.file), and to a webhook that requires a
// bearer token and a tenant header, in Alertmanager's webhook format.
#include <crypt.h>
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string Bcrypt(const std::string& password) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn("$2b$", 6, nullptr, 0, salt, sizeof(salt))) return "";
  crypt_data data{};
  return crypt_r(password.c_str(), salt, &data);
}

struct HttpsResult {
  long status = 0;  // 0: no HTTP answer (TLS refused, connection failed)
  std::string body, error;
};

struct HttpsOptions {
  std::string ca, cert, key, user, password;
};

HttpsResult Get(const std::string& url, const HttpsOptions& o) {
  HttpsResult r;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (!o.ca.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca.c_str());
  if (!o.cert.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, o.cert.c_str());
  if (!o.key.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, o.key.c_str());
  if (!o.user.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, o.user.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, o.password.c_str());
  }
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(
      c, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* out) {
        static_cast<std::string*>(out)->append(p, s * n);
        return s * n;
      });
  const CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  } else {
    r.error = curl_easy_strerror(rc);
  }
  curl_easy_cleanup(c);
  return r;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(250ms);
  }
  return cond();
}

class SecureHttpIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dir_ = new TempDir("secure-http");
    const auto& d = dir_->path();
    ASSERT_TRUE(MakeCertificates(d)) << Slurp(d + "/make-certs.log");
    // kpid's own web configuration: one user.
    std::ofstream(d + "/web.yml") << "basic_auth_users:\n  prometheus: " << Bcrypt("scrape-pass") << "\n";
    // Alertmanager's: TLS and a user for kpid.
    fs_mkdir(d + "/am");
    std::ofstream(d + "/am/web.yml") << "tls_server_config:\n  cert_file: " << d << "/server.crt\n  key_file: " << d
                                     << "/server.key\nbasic_auth_users:\n  kpid: " << Bcrypt("am-pass") << "\n";
    std::ofstream(d + "/am-password") << "am-pass\n";
    std::ofstream(d + "/hook-token") << "hook-secret\n";
    std::ofstream(d + "/kpis.yaml")
        << "measures:\n"
           "  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}\n"
           "kpis:\n"
           "  impressions: {help: Ad impressions., unit: count, formula: impressions, windows: [1h]}\n"
           "alerts:\n"
           "  ImpressionsSeen:\n"
           "    kpi: impressions\n"
           "    window: 1h\n"
           "    condition: \"> 0\"\n"
           "    severity: info\n"
           "    labels: {team: ads}\n";
    am_sink_ = new HttpSink();
    hook_ = new HttpSink();
    am_ = new Alertmanager(d + "/am", am_sink_->url(), FreePort(), d + "/am/web.yml");
    ASSERT_TRUE(am_->WaitReady()) << am_->process().LogTail();
    broker_ = new KafkaBroker(d);
    ASSERT_TRUE(broker_->ok()) << broker_->error();
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "sh.", "--partitions", "2",
                        "--count", "3000", "--seed", "8", "--span", "30m"},
                       d + "/kpigen.log"),
              0);
    kpid_ = new Kpid(
        KpidOptions{.brokers = broker_->bootstrap(),
                    .topic_prefix = "sh.",
                    .group_id = "kpid-secure-http",
                    .state_dir = d + "/state",
                    .work_dir = d,
                    .extra_config = fmt::format("catalog: kpis.yaml\n"
                                                "http: {{web_config_file: web.yml}}\n"
                                                "alerting:\n"
                                                "  evaluation_interval: 1s\n"
                                                "  resend_interval: 2s\n"
                                                "  alertmanagers:\n"
                                                "    - url: https://127.0.0.1:{}\n"
                                                "      http_config:\n"
                                                "        basic_auth: {{username: kpid, password_file: am-password}}\n"
                                                "        tls_config: {{ca_file: ca.crt}}\n"
                                                "  webhooks:\n"
                                                "    - url: {}\n"
                                                "      http_config:\n"
                                                "        authorization: {{credentials_file: hook-token}}\n"
                                                "        headers: {{X-Scope-OrgID: tenant-1}}\n",
                                                am_->address().substr(am_->address().rfind(':') + 1), hook_->url())});
    ASSERT_TRUE(kpid_->WaitStarted()) << kpid_->process().LogTail();
    ASSERT_TRUE(kpid_->WaitServing()) << kpid_->process().LogTail();
  }
  static void TearDownTestSuite() {
    delete kpid_;
    delete broker_;
    delete am_;
    delete hook_;
    delete am_sink_;
    delete dir_;
  }
  static void fs_mkdir(const std::string& p) { std::filesystem::create_directories(p); }
  static std::string Url(const std::string& path) { return "http://" + kpid_->metrics_address() + path; }
  // A real Prometheus scrapes kpid: `up` is 1 and the series came.
  static void ExpectScrapes(Prometheus& prom) {
    ASSERT_TRUE(prom.WaitReady()) << prom.process().LogTail();
    std::string last;
    EXPECT_TRUE(WaitFor(
        [&] {
          last = prom.Query("up{job=\"kpistream\"} == 1 and on() kpistream_build_info");
          return last.find("\"value\"") != std::string::npos;
        },
        60s))
        << last << "\n"
        << prom.process().LogTail();
  }
  static HttpsOptions Client(const std::string& user = "prometheus", const std::string& password = "scrape-pass") {
    return {.user = user, .password = password};
  }

  static TempDir* dir_;
  static HttpSink *am_sink_, *hook_;
  static Alertmanager* am_;
  static KafkaBroker* broker_;
  static Kpid* kpid_;
};

TempDir* SecureHttpIT::dir_ = nullptr;
HttpSink* SecureHttpIT::am_sink_ = nullptr;
HttpSink* SecureHttpIT::hook_ = nullptr;
Alertmanager* SecureHttpIT::am_ = nullptr;
KafkaBroker* SecureHttpIT::broker_ = nullptr;
Kpid* SecureHttpIT::kpid_ = nullptr;

TEST_F(SecureHttpIT, MetricsAndReloadNeedAPasswordProbesDoNot) {
  auto ok = Get(Url("/metrics"), Client());
  EXPECT_EQ(ok.status, 200) << ok.error;
  EXPECT_NE(ok.body.find("kpistream_build_info"), std::string::npos);
  EXPECT_EQ(Get(Url("/metrics"), Client()).status, 200);  // again: the remembered header
  // Each refusal.
  EXPECT_EQ(Get(Url("/metrics"), Client("prometheus", "wrong")).status, 401);
  EXPECT_EQ(Get(Url("/metrics"), Client("nobody", "scrape-pass")).status, 401);
  EXPECT_EQ(Get(Url("/metrics"), Client("", "")).status, 401);
  EXPECT_EQ(HttpCall(kpid_->metrics_address(), "POST", "/-/reload").status, 401);
  // Probes stay open: they say only OK or why not.
  EXPECT_EQ(Get(Url("/-/healthy"), Client("", "")).status, 200);
  EXPECT_EQ(Get(Url("/-/ready"), Client("", "")).status, 200);
}

TEST_F(SecureHttpIT, ARealPrometheusScrapesWithBasicAuth) {
  const auto& d = dir_->path();
  std::ofstream(d + "/scrape-password") << "scrape-pass";
  Prometheus prom(d + "/prometheus", {kpid_->metrics_address()}, {}, FreePort(),
                  fmt::format("    basic_auth: {{username: prometheus, password_file: {}/scrape-password}}\n", d));
  ExpectScrapes(prom);
}

// The web configuration changes while kpid runs, as an operator (or
// cert-manager) changes a mounted Secret: HTTPS with client certificates
// takes over the same port without a restart, a real Prometheus scrapes it
// with tls_config and basic_auth, a broken change is refused and the
// running configuration stays, and the file going back to plaintext is
// picked up too.
TEST_F(SecureHttpIT, HttpsWithClientCertificatesIsSwitchedOnWithoutARestart) {
  const auto& d = dir_->path();
  const std::string plaintext = Slurp(d + "/web.yml");
  const auto write_web = [&](const std::string& text) {
    // As Kubernetes updates a Secret volume: a new file renamed into place.
    std::ofstream(d + "/web.yml.new") << text;
    std::filesystem::rename(d + "/web.yml.new", d + "/web.yml");
  };
  write_web(plaintext +
            "tls_server_config:\n"
            "  cert_file: server.crt\n"
            "  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: ca.crt\n");
  const std::string https = "https://" + kpid_->metrics_address();
  HttpsOptions good{.ca = d + "/ca.crt",
                    .cert = d + "/client.crt",
                    .key = d + "/client.key",
                    .user = "prometheus",
                    .password = "scrape-pass"};
  HttpsResult r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = Get(https + "/metrics", good);
        return r.status == 200;
      },
      30s))
      << r.status << " " << r.error << "\n"
      << kpid_->process().LogTail();
  EXPECT_NE(r.body.find("kpistream_build_info"), std::string::npos);
  // Plaintext is gone from the port; every refusal is its own.
  EXPECT_NE(Get(Url("/metrics"), Client()).status, 200);
  auto no_cert = good;
  no_cert.cert = no_cert.key = "";
  auto stranger = good;
  stranger.cert = d + "/stranger.crt";
  stranger.key = d + "/stranger.key";
  auto no_password = good;
  no_password.user = no_password.password = "";
  const auto refused = Get(https + "/metrics", no_cert);
  EXPECT_NE(refused.status, 200) << refused.body;
  EXPECT_NE(Get(https + "/metrics", stranger).status, 200);
  auto server_only = good;  // from the trusted CA, but not for clients
  server_only.cert = d + "/serveronly.crt";
  server_only.key = d + "/serveronly.key";
  const auto wrong_use = Get(https + "/metrics", server_only);
  EXPECT_EQ(wrong_use.status, 403) << wrong_use.error;
  EXPECT_NE(wrong_use.body.find("client certificate refused"), std::string::npos) << wrong_use.body;
  EXPECT_EQ(Get(https + "/metrics", no_password).status, 401);
  EXPECT_EQ(Get(https + "/-/ready", no_password).status, 200);  // probes: no password, but the certificate
  // A real Prometheus scrapes over HTTPS with its client certificate.
  std::ofstream(d + "/scrape-password") << "scrape-pass";
  Prometheus prom(d + "/prometheus-tls", {kpid_->metrics_address()}, {}, FreePort(),
                  fmt::format("    scheme: https\n"
                              "    tls_config: {{ca_file: {0}/ca.crt, cert_file: {0}/client.crt, key_file: "
                              "{0}/client.key}}\n"
                              "    basic_auth: {{username: prometheus, password_file: {0}/scrape-password}}\n",
                              d));
  ExpectScrapes(prom);
  // A broken change (a key file that does not exist) is refused: HTTPS
  // goes on as it was.
  write_web(plaintext + "tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n");
  EXPECT_TRUE(WaitFor([&] { return kpid_->process().LogTail().find("missing.key") != std::string::npos; }, 30s))
      << kpid_->process().LogTail();
  EXPECT_EQ(Get(https + "/metrics", good).status, 200);
  // Back to plaintext, as the suite started.
  write_web(plaintext);
  EXPECT_TRUE(WaitFor([&] { return Get(Url("/metrics"), Client()).status == 200; }, 30s)) << kpid_->process().LogTail();
}

TEST_F(SecureHttpIT, AlertsReachAnAlertmanagerAndAWebhookThatRequireCredentials) {
  // Alertmanager (TLS, basic auth) has the alert: ask its API with the
  // same credentials, and see it refuse none.
  const auto api = "https://" + am_->address() + "/api/v2/alerts";
  HttpsOptions am{.ca = dir_->path() + "/ca.crt", .user = "kpid", .password = "am-pass"};
  std::string last;
  EXPECT_TRUE(WaitFor(
      [&] {
        last = Get(api, am).body;
        return last.find("ImpressionsSeen") != std::string::npos;
      },
      90s))
      << last << "\n"
      << kpid_->process().LogTail();
  EXPECT_EQ(Get(api, {.ca = dir_->path() + "/ca.crt"}).status, 401);
  // The webhook got Alertmanager's webhook body, with the token and header.
  ASSERT_TRUE(WaitFor([&] { return !hook_->Bodies().empty(); }, 30s)) << kpid_->process().LogTail();
  const auto body = json::parse(hook_->Bodies().front());
  EXPECT_EQ(body["version"], "4");
  EXPECT_EQ(body["status"], "firing");
  EXPECT_EQ(body["receiver"], "kpid");
  EXPECT_EQ(body["commonLabels"]["alertname"], "ImpressionsSeen");
  EXPECT_EQ(body["commonLabels"]["team"], "ads");
  ASSERT_EQ(body["alerts"].size(), 1u);
  EXPECT_EQ(body["alerts"][0]["status"], "firing");
  EXPECT_FALSE(body["alerts"][0]["fingerprint"].get<std::string>().empty());
  const auto headers = hook_->Headers().front();
  EXPECT_NE(headers.find("Authorization: Bearer hook-secret\r\n"), std::string::npos) << headers;
  EXPECT_NE(headers.find("X-Scope-OrgID: tenant-1\r\n"), std::string::npos) << headers;
}

}  // namespace
}  // namespace kpistream::testing
