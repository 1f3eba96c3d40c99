// kpid as a process an operator runs: --version, exit codes, the HTTP probes,
// configuration reload (SIGHUP and POST /-/reload, valid and invalid), JSON
// logs, and a shutdown bounded by --shutdown-timeout while the broker is
// down. Against a real Kafka broker (tools/kafka/kafka-local) on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kCatalog[] = R"yaml(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}
kpis:
  clicks: {formula: clicks, unit: count, windows: [1h]}
  impressions: {formula: impressions, unit: count, windows: [1h]}
)yaml";

// The same catalog with one more KPI.
constexpr char kCatalogWithCtr[] = R"yaml(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}
kpis:
  clicks: {formula: clicks, unit: count, windows: [1h]}
  impressions: {formula: impressions, unit: count, windows: [1h]}
  ctr: {formula: clicks / impressions, unit: ratio, windows: [1h]}
)yaml";

// A port held open (listening) by the test: kpid must not take it.
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(fd_, 4) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
  }
  ~HeldPort() { close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class KpidIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("kpid");
    broker_ = new KafkaBroker(dir_->path());
    ASSERT_TRUE(broker_->ok()) << broker_->error();
    ASSERT_TRUE(CreateTopics(broker_->bootstrap(), {"kp.campaign", "kp.product", "kp.crm", "kp.dlq"}, 2));
  }
  static void TearDownTestSuite() {
    delete broker_;
    delete dir_;
  }

  void SetUp() override {
    work_ = std::make_unique<TempDir>("kpid-work");
    std::ofstream(work_->path() + "/kpis.yaml") << kCatalog;
  }

  KpidOptions Options(std::vector<std::string> extra_args = {}) {
    return KpidOptions{.brokers = broker_->bootstrap(),
                       .topic_prefix = "kp.",
                       .group_id = "kpid-" + std::to_string(++group_),
                       .state_dir = work_->path() + "/state",
                       .work_dir = work_->path(),
                       .extra_config = "catalog: kpis.yaml\n",
                       .extra_args = std::move(extra_args)};
  }

  static std::vector<std::string> KpiNames(Kpid& kpid) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::ListKpisResponse resp;
    std::vector<std::string> names;
    if (!kpid.stub().ListKpis(&ctx, {}, &resp).ok()) return names;
    for (const auto& k : resp.kpis()) names.push_back(k.name());
    return names;
  }

  static bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (cond()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return cond();
  }

  static grpc::health::v1::HealthCheckResponse::ServingStatus Health(Kpid& kpid, const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 2s);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    if (!kpid.health().Check(&ctx, req, &resp).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    return resp.status();
  }

  static TempDir* dir_;
  static KafkaBroker* broker_;
  static int group_;
  std::unique_ptr<TempDir> work_;
};

TempDir* KpidIT::dir_ = nullptr;
KafkaBroker* KpidIT::broker_ = nullptr;
int KpidIT::group_ = 0;

TEST_F(KpidIT, VersionPrintsTheBuildsVersion) {
  const auto log = work_->path() + "/version.log";
  ASSERT_EQ(RunToEnd({KpidBin(), "--version"}, log, 10s), 0);
  const auto out = ReadFile(log);
  EXPECT_EQ(out.rfind("kpid ", 0), 0u) << out;
  EXPECT_NE(out.find('.'), std::string::npos) << out;  // kpid 0.2.0 (+ commit when built from git)
}

TEST_F(KpidIT, AnAddressInUseExitsWithCode2AndSaysWhich) {
  HeldPort held;
  const auto o = Options();
  const auto config = WriteKpidConfig(o);
  for (const std::string flag : {"--grpc-listen", "--metrics-listen"}) {
    const auto log = work_->path() + "/inuse-" + flag.substr(2) + ".log";
    std::vector<std::string> argv{KpidBin(), "--config", config, "--state-dir", o.state_dir, flag, held.address()};
    const std::string other = flag == "--grpc-listen" ? "--metrics-listen" : "--grpc-listen";
    argv.insert(argv.end(), {other, "127.0.0.1:0"});
    EXPECT_EQ(RunToEnd(argv, log, 30s), 2) << flag << ": " << ReadFile(log);
    EXPECT_NE(ReadFile(log).find(held.address()), std::string::npos) << flag << ": " << ReadFile(log);
  }
}

TEST_F(KpidIT, AStateDirThatCannotBeOpenedExitsWithCode3) {
  const auto config = WriteKpidConfig(Options());
  const auto file = work_->path() + "/not-a-dir";
  std::ofstream(file) << "x";
  const auto log = work_->path() + "/state.log";
  EXPECT_EQ(RunToEnd({KpidBin(), "--config", config, "--state-dir", file, "--grpc-listen", "127.0.0.1:0",
                      "--metrics-listen", "127.0.0.1:0"},
                     log, 30s),
            3)
      << ReadFile(log);
}

TEST_F(KpidIT, ProbesReloadAndJsonLogs) {
  Kpid kpid(Options({"--log-format", "json"}));
  ASSERT_TRUE(kpid.WaitStarted()) << kpid.process().LogTail();
  ASSERT_TRUE(kpid.WaitServing()) << kpid.process().LogTail();
  const auto http = kpid.metrics_address();
  EXPECT_EQ(HttpCall(http, "GET", "/-/healthy").status, 200);
  EXPECT_TRUE(WaitFor([&] { return HttpCall(http, "GET", "/-/ready").status == 200; }, 30s));
  EXPECT_EQ(HttpCall(http, "GET", "/-/reload").status, 405);
  EXPECT_EQ(HttpCall(http, "GET", "/nope").status, 404);
  EXPECT_EQ(KpiNames(kpid), (std::vector<std::string>{"clicks", "impressions"}));

  // An invalid KPI file: 400 with the file, line and what is wrong; the
  // running catalog stays and kpid keeps serving.
  std::ofstream(work_->path() + "/kpis.yaml") << "measures:\n  clicks: {family: campaign, aggregation: cnt}\n";
  auto bad = HttpCall(http, "POST", "/-/reload");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("kpis.yaml:2"), std::string::npos) << bad.body;
  EXPECT_EQ(KpiNames(kpid), (std::vector<std::string>{"clicks", "impressions"}));
  EXPECT_EQ(HttpCall(http, "GET", "/-/ready").status, 200);

  // A valid one with a new KPI, by POST.
  std::ofstream(work_->path() + "/kpis.yaml") << kCatalogWithCtr;
  auto good = HttpCall(http, "POST", "/-/reload");
  EXPECT_EQ(good.status, 200) << good.body;
  EXPECT_EQ(KpiNames(kpid), (std::vector<std::string>{"clicks", "impressions", "ctr"}));
  EXPECT_NE(kpid.Scrape().find("kpistream_kpi_query_errors"), std::string::npos);

  // Back to two KPIs, by SIGHUP.
  std::ofstream(work_->path() + "/kpis.yaml") << kCatalog;
  kpid.process().Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return KpiNames(kpid).size() == 2; }, 30s)) << kpid.process().LogTail();
  // An invalid file by SIGHUP: logged, the running catalog stays.
  std::ofstream(work_->path() + "/kpis.yaml") << "kpis: [\n";
  kpid.process().Signal(SIGHUP);
  EXPECT_TRUE(
      WaitFor([&] { return ReadFile(kpid.process().log_path()).find("not reloaded") != std::string::npos; }, 30s));
  EXPECT_EQ(KpiNames(kpid).size(), 2u);
  EXPECT_TRUE(kpid.process().Running());

  kpid.process().Signal(SIGTERM);
  ASSERT_EQ(kpid.process().Wait(30s), 0) << kpid.process().LogTail();
  // Every line kpid printed is one JSON object with ts, level and msg.
  std::ifstream in(kpid.process().log_path());
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++lines;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(j.contains("ts") && j.contains("level") && j.contains("msg")) << line;
  }
  EXPECT_GT(lines, 3);
}

TEST_F(KpidIT, SigtermWhileTheBrokerIsDownStopsWithinTheShutdownTimeout) {
  Kpid kpid(Options({"--shutdown-timeout", "5"}));
  ASSERT_TRUE(kpid.WaitStarted()) << kpid.process().LogTail();
  ASSERT_TRUE(kpid.WaitServing()) << kpid.process().LogTail();
  ASSERT_TRUE(
      WaitFor([&] { return Health(kpid, "kpistream.ingest") == grpc::health::v1::HealthCheckResponse::SERVING; }, 60s));
  ASSERT_TRUE(broker_->Stop());
  // Reads stay up through a broker outage; ingestion does not.
  EXPECT_TRUE(
      WaitFor([&] { return Health(kpid, "kpistream.ingest") != grpc::health::v1::HealthCheckResponse::SERVING; }, 60s));
  EXPECT_EQ(Health(kpid, ""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(HttpCall(kpid.metrics_address(), "GET", "/-/ready").status, 200);
  const auto t0 = Clock::now();
  kpid.process().Signal(SIGTERM);
  const auto code = kpid.process().Wait(15s);
  const auto took = Clock::now() - t0;
  EXPECT_TRUE(code.has_value()) << kpid.process().LogTail();
  EXPECT_LT(took, 8s) << kpid.process().LogTail();
  ASSERT_TRUE(broker_->Restart());
  // Restarted on the same state, it catches up and serves.
  Kpid again(Options());
  EXPECT_TRUE(again.WaitStarted()) << again.process().LogTail();
  EXPECT_TRUE(again.WaitServing()) << again.process().LogTail();
}

// librdkafka before 2.3 aborts when a consumer that never got an assignment
// is destroyed (confluentinc/librdkafka#4312): a SIGTERM while kpid is still
// joining its group (here: no broker answers at all) must exit cleanly, and
// so must reloads in quick succession.
TEST_F(KpidIT, StoppingBeforeTheFirstAssignmentExitsCleanly) {
  auto o = Options({"--shutdown-timeout", "10"});
  o.brokers = "127.0.0.1:" + std::to_string(FreePort());  // nothing listens
  Kpid kpid(o);
  ASSERT_TRUE(kpid.WaitStarted()) << kpid.process().LogTail();
  std::this_thread::sleep_for(500ms);
  kpid.process().Signal(SIGTERM);
  EXPECT_EQ(kpid.process().Wait(20s), 0) << kpid.process().LogTail();

  Kpid again(Options());
  ASSERT_TRUE(again.WaitStarted()) << again.process().LogTail();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(HttpCall(again.metrics_address(), "POST", "/-/reload").status, 200) << again.process().LogTail();
  }
  EXPECT_TRUE(again.process().Running()) << again.process().LogTail();
  again.process().Signal(SIGTERM);
  EXPECT_EQ(again.process().Wait(30s), 0) << again.process().LogTail();
}

}  // namespace
}  // namespace kpistream::testing
