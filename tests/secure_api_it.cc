// gRPC over TLS with client certificates and bearer tokens, on a real
// broker: every refusal (plaintext to the TLS port, no or an unknown client
// certificate, a missing, wrong or expired token, a token of the wrong
// scope), the health service reachable without a token, a rotated tokens
// file, kpictl's TLS and token options, and grpcurl calling every method
// through server reflection with no local .proto files.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <google/protobuf/util/time_util.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "kpistream/v1/alerts.grpc.pb.h"
#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;

std::string KpictlBin() { return KPISTREAM_KPICTL_BIN; }

constexpr const char* kReadToken = "read-token-for-dashboards";
constexpr const char* kAlertsToken = "alerts-token-for-oncall";
constexpr const char* kAdminToken = "admin-token-for-operators";
constexpr const char* kExpiredToken = "expired-token-from-2020";

class SecureApiIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("secure-api");
    const auto& d = dir_->path();
    ASSERT_TRUE(MakeCertificates(d)) << Slurp(d + "/make-certs.log");
    WriteTokens(SuiteTokens());
    broker_ = new KafkaBroker(d);
    ASSERT_TRUE(broker_->ok()) << broker_->error();
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "sec.", "--partitions", "2",
                        "--count", "5000", "--seed", "5", "--span", "1h"},
                       d + "/kpigen.log"),
              0);
    kpid_ = new Kpid(KpidOptions{
        .brokers = broker_->bootstrap(),
        .topic_prefix = "sec.",
        .group_id = "kpid-secure",
        .state_dir = d + "/state",
        .work_dir = d,
        .extra_config = "grpc:\n  tls: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}\n"
                        "  tokens_file: tokens.yaml\n",
        .credentials = Credentials("client")});
    ASSERT_TRUE(kpid_->WaitStarted()) << kpid_->process().LogTail();
    ASSERT_TRUE(kpid_->WaitServing()) << kpid_->process().LogTail();  // health: no token needed
  }
  static void TearDownTestSuite() {
    delete kpid_;
    delete broker_;
    delete dir_;
  }
  // The suite's tokens file: one token per scope and an expired one.
  static std::string SuiteTokens() {
    return fmt::format(
        "tokens:\n"
        "  - {{name: dashboards, token: {}, scopes: [read]}}\n"
        "  - {{name: oncall, token: {}, scopes: [alerts]}}\n"
        "  - {{name: ops, token: {}, scopes: [admin]}}\n"
        "  - {{name: old, token: {}, scopes: [admin], expires: 2020-01-01T00:00:00Z}}\n",
        kReadToken, kAlertsToken, kAdminToken, kExpiredToken);
  }
  static void WriteTokens(const std::string& text) {
    // Written aside and renamed, as a Secret volume is updated.
    std::ofstream(dir_->path() + "/tokens.yaml.new") << text;
    std::filesystem::rename(dir_->path() + "/tokens.yaml.new", dir_->path() + "/tokens.yaml");
  }
  // TLS trusting the test CA, presenting `client`'s certificate ("": none).
  static std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& client) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(dir_->path() + "/ca.crt");
    if (!client.empty()) {
      o.pem_cert_chain = Slurp(dir_->path() + "/" + client + ".crt");
      o.pem_private_key = Slurp(dir_->path() + "/" + client + ".key");
    }
    return grpc::SslCredentials(o);
  }
  static grpc::Status ListKpis(const std::shared_ptr<grpc::ChannelCredentials>& creds, const std::string& token) {
    auto stub = v1::KpiService::NewStub(grpc::CreateChannel(kpid_->grpc_address(), creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ListKpisResponse resp;
    return stub->ListKpis(&ctx, {}, &resp);
  }
  static grpc::Status ListAlerts(const std::string& token) {
    auto stub = v1::AlertService::NewStub(grpc::CreateChannel(kpid_->grpc_address(), Credentials("client")));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ListAlertsResponse resp;
    return stub->ListAlerts(&ctx, {}, &resp);
  }

  static TempDir* dir_;
  static KafkaBroker* broker_;
  static Kpid* kpid_;
};

TempDir* SecureApiIT::dir_ = nullptr;
KafkaBroker* SecureApiIT::broker_ = nullptr;
Kpid* SecureApiIT::kpid_ = nullptr;

TEST_F(SecureApiIT, ATrustedClientWithAValidTokenIsServed) {
  EXPECT_TRUE(ListKpis(Credentials("client"), kReadToken).ok());
  EXPECT_TRUE(ListKpis(Credentials("client"), kAdminToken).ok());
  EXPECT_TRUE(ListAlerts(kAlertsToken).ok());
  EXPECT_TRUE(ListAlerts(kAdminToken).ok());
}

TEST_F(SecureApiIT, TheConnectionIsRefusedWithoutTlsOrATrustedClientCertificate) {
  const auto plaintext = ListKpis(grpc::InsecureChannelCredentials(), kReadToken);
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();
  const auto no_cert = ListKpis(Credentials(""), kReadToken);
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << no_cert.error_message();
  const auto stranger = ListKpis(Credentials("stranger"), kReadToken);
  EXPECT_EQ(stranger.error_code(), grpc::StatusCode::UNAVAILABLE) << stranger.error_message();
}

TEST_F(SecureApiIT, EachTokenRefusalHasItsCode) {
  const auto creds = Credentials("client");
  const auto missing = ListKpis(creds, "");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(missing.error_message().find("authorization: Bearer"), std::string::npos) << missing.error_message();
  const auto wrong = ListKpis(creds, "not-a-token-of-this-kpid");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message().find("not-a-token"), std::string::npos);  // never echoed
  const auto expired = ListKpis(creds, kExpiredToken);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(expired.error_message().find("expired"), std::string::npos) << expired.error_message();
  const auto scope = ListKpis(creds, kAlertsToken);
  EXPECT_EQ(scope.error_code(), grpc::StatusCode::PERMISSION_DENIED) << scope.error_message();
  const auto alerts = ListAlerts(kReadToken);
  EXPECT_EQ(alerts.error_code(), grpc::StatusCode::PERMISSION_DENIED) << alerts.error_message();
}

TEST_F(SecureApiIT, EveryMethodChecksItsScope) {
  auto channel = grpc::CreateChannel(kpid_->grpc_address(), Credentials("client"));
  auto kpis = v1::KpiService::NewStub(channel);
  auto alerts = v1::AlertService::NewStub(channel);
  auto ctx = [](const std::string& token) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + 10s);
    c->AddMetadata("authorization", "Bearer " + token);
    return c;
  };
  v1::GetKpiRequest get;
  get.set_kpi("ctr");
  get.set_window("24h");
  v1::GetKpiResponse get_resp;
  v1::BatchGetKpisRequest batch;
  *batch.add_queries() = get;
  v1::BatchGetKpisResponse batch_resp;
  v1::QueryRangeRequest range;
  range.set_kpi("ctr");
  range.set_step("1h");
  *range.mutable_start_time() = google::protobuf::util::TimeUtil::SecondsToTimestamp(time(nullptr) - 7200);
  *range.mutable_end_time() = google::protobuf::util::TimeUtil::SecondsToTimestamp(time(nullptr));
  v1::QueryRangeResponse range_resp;
  v1::ListRulesResponse rules_resp;
  for (const auto& [token, kpi_code, alert_code] :
       std::vector<std::tuple<std::string, grpc::StatusCode, grpc::StatusCode>>{
           {kReadToken, grpc::StatusCode::OK, grpc::StatusCode::PERMISSION_DENIED},
           {kAlertsToken, grpc::StatusCode::PERMISSION_DENIED, grpc::StatusCode::OK},
           {kExpiredToken, grpc::StatusCode::UNAUTHENTICATED, grpc::StatusCode::UNAUTHENTICATED}}) {
    SCOPED_TRACE(token);
    EXPECT_EQ(kpis->GetKpi(ctx(token).get(), get, &get_resp).error_code(), kpi_code);
    EXPECT_EQ(kpis->BatchGetKpis(ctx(token).get(), batch, &batch_resp).error_code(), kpi_code);
    EXPECT_EQ(kpis->QueryRange(ctx(token).get(), range, &range_resp).error_code(), kpi_code);
    EXPECT_EQ(alerts->ListRules(ctx(token).get(), {}, &rules_resp).error_code(), alert_code);
    {
      v1::WatchKpisRequest w;
      *w.add_queries() = get;
      auto c = ctx(token);
      auto reader = kpis->WatchKpis(c.get(), w);
      v1::WatchKpisResponse first;
      const bool got = reader->Read(&first);
      if (kpi_code != grpc::StatusCode::OK) {
        EXPECT_FALSE(got);
        EXPECT_EQ(reader->Finish().error_code(), kpi_code);
      } else {
        EXPECT_TRUE(got);
        c->TryCancel();
      }
    }
    {
      auto c = ctx(token);
      auto reader = alerts->WatchAlerts(c.get(), {});
      if (alert_code != grpc::StatusCode::OK) {
        v1::AlertTransition t;
        EXPECT_FALSE(reader->Read(&t));
        EXPECT_EQ(reader->Finish().error_code(), alert_code);
      } else {
        c->TryCancel();
      }
    }
  }
}

TEST_F(SecureApiIT, ARotatedTokensFileIsUsedWithoutARestart) {
  const std::string fresh = "rotated-token-0123456789";
  WriteTokens(fmt::format("tokens:\n  - {{name: rotated, token: {}, scopes: [read, alerts]}}\n", fresh));
  // Picked up within a second of the change, without SIGHUP.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!ListKpis(Credentials("client"), fresh).ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(ListKpis(Credentials("client"), fresh).ok());
  EXPECT_EQ(ListKpis(Credentials("client"), kReadToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A broken file is refused by a reload, and the tokens in use stay.
  WriteTokens("tokens:\n  - {name: bad, token: short, scopes: [read]}\n");
  const auto reload = HttpCall(kpid_->metrics_address(), "POST", "/-/reload");
  EXPECT_NE(reload.status, 200) << reload.body;
  EXPECT_NE(reload.body.find("at least 16 characters"), std::string::npos) << reload.body;
  EXPECT_TRUE(ListKpis(Credentials("client"), fresh).ok());
  // Restore the suite's tokens for the other tests.
  WriteTokens(SuiteTokens());
  ASSERT_EQ(HttpCall(kpid_->metrics_address(), "POST", "/-/reload").status, 200);
  EXPECT_TRUE(ListKpis(Credentials("client"), kReadToken).ok());
}

TEST_F(SecureApiIT, KpictlSpeaksTlsWithAToken) {
  const auto& d = dir_->path();
  auto run = [&](std::vector<std::string> extra, const std::string& log) {
    std::vector<std::string> argv{KpictlBin(),
                                  "get",
                                  "ctr",
                                  "--window",
                                  "24h",
                                  "--server",
                                  kpid_->grpc_address(),
                                  "--tls",
                                  "--ca-file",
                                  d + "/ca.crt",
                                  "--cert-file",
                                  d + "/client.crt",
                                  "--key-file",
                                  d + "/client.key"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunToEnd(argv, d + "/" + log, 60s);
  };
  EXPECT_EQ(run({"--token", kReadToken}, "kpictl-ok.log"), 0) << Slurp(d + "/kpictl-ok.log");
  EXPECT_NE(run({}, "kpictl-no-token.log"), 0);
  EXPECT_NE(Slurp(d + "/kpictl-no-token.log").find("UNAUTHENTICATED"), std::string::npos)
      << Slurp(d + "/kpictl-no-token.log");
}

// grpcurl, as a user runs it: no .proto files, only server reflection.
// Every method the server lists is called (a method added without a call
// here fails the test); the streams are cut after their first messages.
TEST_F(SecureApiIT, GrpcurlCallsEveryMethodThroughReflection) {
  const auto& d = dir_->path();
  int n = 0;
  // grpcurl with the test CA, the client certificate and a token.
  auto base = [&](const std::string& token) {
    return std::vector<std::string>{KPISTREAM_GRPCURL,
                                    "-cacert",
                                    d + "/ca.crt",
                                    "-cert",
                                    d + "/client.crt",
                                    "-key",
                                    d + "/client.key",
                                    "-H",
                                    "authorization: Bearer " + token};
  };
  auto grpcurl = [&](std::vector<std::string> args, std::string* out) {
    auto argv = base(kAdminToken);
    argv.insert(argv.end(), args.begin(), args.end());
    const auto log = fmt::format("{}/grpcurl-{}.log", d, n++);
    const int rc = RunToEnd(argv, log, 600s);  // the first run may build grpcurl
    *out = Slurp(log);
    return rc;
  };
  std::string out;
  ASSERT_EQ(grpcurl({kpid_->grpc_address(), "list"}, &out), 0) << out;
  std::set<std::string> services;
  for (std::istringstream in(out); std::getline(in, out);) services.insert(out);
  EXPECT_EQ(services, (std::set<std::string>{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                             "grpc.reflection.v1alpha.ServerReflection", "kpistream.v1.AlertService",
                                             "kpistream.v1.KpiService"}));
  // Each method, its request, and what its answer must contain. Streams
  // get -max-time: grpcurl then ends with DeadlineExceeded after printing.
  const std::map<std::string, std::pair<std::string, std::string>> calls = {
      {"grpc.health.v1.Health.Check", {"{}", "SERVING"}},
      {"grpc.health.v1.Health.Watch", {"{}", "SERVING"}},
      {"grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
       {R"({"listServices": ""})", "kpistream.v1.KpiService"}},
      {"grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
       {R"({"listServices": ""})", "kpistream.v1.KpiService"}},
      {"kpistream.v1.KpiService.ListKpis", {"{}", R"("name": "ctr")"}},
      {"kpistream.v1.KpiService.GetKpi", {R"({"kpi": "impressions", "window": "24h"})", R"("value":)"}},
      {"kpistream.v1.KpiService.BatchGetKpis",
       {R"({"queries": [{"kpi": "impressions", "window": "24h"}, {"kpi": "ctr", "window": "24h"}]})", R"("results":)"}},
      {"kpistream.v1.KpiService.QueryRange",
       {R"({"kpi": "impressions", "startTime": "-", "endTime": "-", "step": "1h"})", R"("points":)"}},
      {"kpistream.v1.KpiService.WatchKpis",
       {R"({"queries": [{"kpi": "impressions", "window": "24h"}]})", R"("value":)"}},
      {"kpistream.v1.AlertService.ListAlerts", {"{}", "{"}},  // no alerts yet: sequence 0 prints as {}
      {"kpistream.v1.AlertService.ListRules", {"{}", R"("name":)"}},
      {"kpistream.v1.AlertService.WatchAlerts", {"{}", ""}},
  };
  const auto now = std::chrono::system_clock::now();
  const auto rfc3339 = [](std::chrono::system_clock::time_point t) {
    return google::protobuf::util::TimeUtil::ToString(
        google::protobuf::util::TimeUtil::TimeTToTimestamp(std::chrono::system_clock::to_time_t(t)));
  };
  for (const auto& service : services) {
    ASSERT_EQ(grpcurl({kpid_->grpc_address(), "list", service}, &out), 0) << out;
    for (std::istringstream in(out); std::getline(in, out);) {
      const std::string method = out;
      SCOPED_TRACE(method);
      const auto call = calls.find(method);
      ASSERT_NE(call, calls.end()) << "no call in this test for " << method;
      std::string body = call->second.first;
      if (method.ends_with("QueryRange")) {
        body = fmt::format(R"({{"kpi": "impressions", "startTime": "{}", "endTime": "{}", "step": "1h"}})",
                           rfc3339(now - 6h), rfc3339(now));
      }
      const bool stream = method.ends_with("Watch") || method.ends_with("WatchKpis") || method.ends_with("WatchAlerts");
      std::vector<std::string> args{"-d", body};
      if (stream) args.insert(args.end(), {"-max-time", "3"});
      args.push_back(kpid_->grpc_address());
      const auto dot = method.rfind('.');
      args.push_back(method.substr(0, dot) + "/" + method.substr(dot + 1));
      const int rc = grpcurl(args, &out);
      if (stream) {
        EXPECT_NE(out.find("DeadlineExceeded"), std::string::npos) << out;  // cut by -max-time, not refused
      } else {
        EXPECT_EQ(rc, 0) << out;
      }
      EXPECT_NE(out.find(call->second.second), std::string::npos) << out;
    }
  }
  // A wrong token is refused through grpcurl too, with the code by name.
  auto argv = base("wrong");
  argv.insert(argv.end(), {kpid_->grpc_address(), "kpistream.v1.KpiService/ListKpis"});
  EXPECT_NE(RunToEnd(argv, d + "/grpcurl-wrong.log", 60s), 0);
  EXPECT_NE(Slurp(d + "/grpcurl-wrong.log").find("Unauthenticated"), std::string::npos)
      << Slurp(d + "/grpcurl-wrong.log");
}

// Replicas reading each other's partials (cluster.peers) over mutual TLS,
// with a bearer token: two replicas of one group each own one partition,
// and each answers for both, as the single kpid reading everything does.
TEST_F(SecureApiIT, ReplicasReadEachOthersPartialsOverMutualTlsWithAToken) {
  const auto& d = dir_->path();
  std::ofstream(d + "/peer-token") << kReadToken << "\n";
  const std::vector<std::string> addresses = {fmt::format("127.0.0.1:{}", FreePort()),
                                              fmt::format("127.0.0.1:{}", FreePort())};
  std::vector<std::unique_ptr<Kpid>> replicas;
  for (int i = 0; i < 2; ++i) {
    const auto work = d + fmt::format("/replica-{}", i);
    std::filesystem::create_directories(work);
    for (const char* f :
         {"server.crt", "server.key", "ca.crt", "client.crt", "client.key", "tokens.yaml", "peer-token"}) {
      std::filesystem::copy_file(d + "/" + f, work + "/" + f, std::filesystem::copy_options::overwrite_existing);
    }
    replicas.push_back(std::make_unique<Kpid>(KpidOptions{
        .brokers = broker_->bootstrap(),
        .topic_prefix = "sec.",
        .group_id = "kpid-secure-cluster",
        .state_dir = work + "/state",
        .work_dir = work,
        .changelog = true,
        .grpc_listen = addresses[static_cast<size_t>(i)],
        .extra_config =
            fmt::format("grpc:\n  tls: {{cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}}\n"
                        "  tokens_file: tokens.yaml\n"
                        "cluster:\n  peers: [{}, {}]\n"
                        "  tls: {{ca_file: ca.crt, cert_file: client.crt, key_file: client.key}}\n"
                        "  token_file: peer-token\n",
                        addresses[0], addresses[1]),
        .extra_args = {"--group-instance-id", fmt::format("secure-{}", i)},
        .credentials = Credentials("client")}));
    ASSERT_TRUE(replicas.back()->WaitStarted()) << replicas.back()->process().LogTail();
  }
  auto impressions = [&](Kpid& k, v1::GetKpiResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ctx.AddMetadata("authorization", std::string("Bearer ") + kReadToken);
    v1::GetKpiRequest req;
    req.set_kpi("impressions");
    req.set_window("all");
    return k.stub().GetKpi(&ctx, req, resp);
  };
  v1::GetKpiResponse whole;
  ASSERT_TRUE(WaitCaughtUp(*kpid_, 60s, 6)) << kpid_->process().LogTail();
  ASSERT_TRUE(impressions(*kpid_, &whole).ok());
  ASSERT_EQ(whole.values_size(), 1);
  ASSERT_GT(whole.values(0).value(), 0);
  // Both replicas own a partition of each topic (or one owns both, for a
  // moment), and both answer for everything.
  for (auto& r : replicas) {
    v1::GetKpiResponse resp;
    const auto deadline = std::chrono::steady_clock::now() + 90s;
    bool exact = false;
    while (!exact && std::chrono::steady_clock::now() < deadline) {
      exact = impressions(*r, &resp).ok() && resp.missing_partitions_size() == 0 && resp.values_size() == 1 &&
              resp.values(0).value() == whole.values(0).value() &&
              resp.consistency_token().find("@secure-0=") != std::string::npos &&
              resp.consistency_token().find("@secure-1=") != std::string::npos;
      if (!exact) std::this_thread::sleep_for(200ms);
    }
    EXPECT_TRUE(exact) << resp.DebugString() << r->process().LogTail();
    EXPECT_GT(MetricSum(r->Scrape(), "kpistream_cluster_peer_reads_total"), 0);
  }
}

}  // namespace
}  // namespace kpistream::testing
