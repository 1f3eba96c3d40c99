// kpictl as people and scripts use it, against kpid (the embedded demo:
// this tests the client, not Kafka): formats, exit codes, times, and
// `watch` redrawing in place in a real terminal (tmux).
#include <gtest/gtest.h>
#include <signal.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;

std::string KpictlBin() { return KPISTREAM_KPICTL_BIN; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class KpictlIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("kpictl");
    const auto info = dir_->path() + "/listen";
    kpid_ = new Process({KpidBin(), "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--listen-info",
                         info, "--demo-rate", "2000"},
                        dir_->path() + "/kpid.log");
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(info);
      for (std::string line; std::getline(in, line);) {
        if (line.rfind("grpc=", 0) == 0) server_ = line.substr(5);
      }
      if (!server_.empty()) break;
      std::this_thread::sleep_for(50ms);
    }
    ASSERT_FALSE(server_.empty()) << kpid_->LogTail();
    // The demo's backfill is in once the last 5 minutes have impressions.
    for (int i = 0; i < 150; ++i) {
      const auto [rc, out] = Run({"get", "impressions", "--window", "5m", "-o", "csv"});
      if (rc == 0 && std::regex_search(out, std::regex("\n[1-9][0-9]*,"))) break;
      std::this_thread::sleep_for(200ms);
    }
  }
  static void TearDownTestSuite() {
    kpid_->Signal(SIGTERM);
    kpid_->Wait(30s);
    delete kpid_;
    delete dir_;
  }
  // (exit code, stdout + stderr) of kpictl with --server.
  static std::pair<int, std::string> Run(std::vector<std::string> args) {
    std::vector<std::string> argv{KpictlBin()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--server", server_});
    const auto log = dir_->path() + "/kpictl-" + std::to_string(++runs_) + ".log";
    const int rc = RunToEnd(argv, log, 30s);
    return {rc, ReadAll(log)};
  }
  static TempDir* dir_;
  static Process* kpid_;
  static std::string server_;
  static int runs_;
};

TempDir* KpictlIT::dir_ = nullptr;
Process* KpictlIT::kpid_ = nullptr;
std::string KpictlIT::server_;
int KpictlIT::runs_ = 0;

TEST_F(KpictlIT, FormatsForPeopleAndScripts) {
  auto [rc, out] = Run({"get", "ctr", "--group-by", "channel", "--window", "1h"});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("channel"), std::string::npos) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("search +[0-9.]+ %"))) << out;  // unit formatted
  EXPECT_NE(out.find("freshness"), std::string::npos) << out;
  // -o anywhere; json parses; csv has raw numbers.
  std::tie(rc, out) = Run({"-o", "json", "get", "ctr"});
  ASSERT_EQ(rc, 0);
  const auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j["kpi"], "ctr");
  EXPECT_FALSE(j.value("consistency_token", std::string()).empty()) << out;
  std::tie(rc, out) = Run({"get", "spend", "--group-by", "channel", "-o", "csv"});
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(out.rfind("channel,spend (", 0), 0u) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\nsearch,[0-9]+\\.?[0-9]*,"))) << out;
  std::tie(rc, out) = Run({"list", "-o", "yaml"});
  ASSERT_EQ(rc, 0);
  EXPECT_NE(out.find("name: ctr"), std::string::npos);
  std::tie(rc, out) = Run({"describe", "cpa"});
  EXPECT_NE(out.find("Formula:     spend / conversions"), std::string::npos) << out;
  std::tie(rc, out) = Run({"range", "clicks", "--start", "-1h", "--step", "15m", "--window", "30m"});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("20[0-9-]+T[0-9:]+Z +[0-9,]+"))) << out;
  std::tie(rc, out) = Run({"rules"});
  EXPECT_NE(out.find("ChurnRateSpike"), std::string::npos);
  EXPECT_EQ(Run({"health"}).first, 0);
  std::tie(rc, out) = Run({"alerts", "--state", "firing", "-o", "json"});
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(KpictlIT, ExitCodesScriptsCanRelyOn) {
  auto [rc, out] = Run({"get", "no_such_kpi"});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;  // by name, not number
  std::tie(rc, out) = Run({"get", "ctr", "--window", "fortnight"});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos);
  std::tie(rc, out) = Run({"get", "ctr", "--end", "yesterday-ish"});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("RFC 3339"), std::string::npos);
  EXPECT_EQ(Run({"no-such-command"}).first, 2);
  // Nobody listens there: unreachable.
  std::vector<std::string> argv{KpictlBin(), "health", "--server", "127.0.0.1:" + std::to_string(FreePort()),
                                "--timeout", "2"};
  EXPECT_EQ(RunToEnd(argv, dir_->path() + "/unreachable.log", 30s), 3) << ReadAll(dir_->path() + "/unreachable.log");
  // validate: both file kinds; an error is 2 with file:line:col.
  std::ofstream(dir_->path() + "/kpis.yaml")
      << "measures:\n  c: {family: campaign, aggregation: count}\nkpis:\n  k: {formula: c}\n";
  std::ofstream(dir_->path() + "/kpid.yaml")
      << "kafka:\n  brokers: b:9092\n  group_id: g\n  topics: {campaign: a, product: b, crm: c}\ncatalog: kpis.yaml\n";
  std::ofstream(dir_->path() + "/bad.yaml") << "measures:\n  c: {family: campaign, aggregation: cnt}\n";
  std::tie(rc, out) = Run({"validate", dir_->path() + "/kpis.yaml"});
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = Run({"validate", dir_->path() + "/kpid.yaml"});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("1 KPIs"), std::string::npos) << out;
  std::tie(rc, out) = Run({"validate", dir_->path() + "/bad.yaml"});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("bad.yaml:2:"), std::string::npos) << out;
}

// `watch` in a real terminal: the screen is redrawn in place (the header
// line stays on row 1; the time in it changes), never scrolled.
TEST_F(KpictlIT, WatchRedrawsInPlaceInATerminal) {
  if (std::system("command -v tmux >/dev/null") != 0) GTEST_SKIP() << "tmux is not installed (tools/install-deps.sh)";
  const std::string session = "kpictl-it-" + std::to_string(::getpid());
  const std::string cmd = fmt::format(
      "tmux new-session -d -s {} -x 120 -y 30 '{} watch impressions clicks "
      "--window 5m --server {}'",
      session, KpictlBin(), server_);
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto capture = [&] {
    const auto file = dir_->path() + "/pane.txt";
    std::system(fmt::format("tmux capture-pane -p -t {} > {}", session, file).c_str());
    return ReadAll(file);
  };
  std::string first, later;
  for (int i = 0; i < 50 && first.find("clicks") == std::string::npos; ++i) {
    std::this_thread::sleep_for(200ms);
    first = capture();
  }
  std::this_thread::sleep_for(3s);
  later = capture();
  std::system(fmt::format("tmux kill-session -t {}", session).c_str());
  ASSERT_NE(first.find("kpictl watch"), std::string::npos) << first;
  EXPECT_EQ(first.rfind("kpictl watch", 0), 0u) << first;  // row 1
  EXPECT_EQ(later.rfind("kpictl watch", 0), 0u) << later;  // still row 1: redrawn, not scrolled
  EXPECT_NE(first.substr(0, first.find('\n')), later.substr(0, later.find('\n')));  // a newer time
  EXPECT_NE(later.find("impressions"), std::string::npos) << later;
  EXPECT_NE(later.find("clicks"), std::string::npos) << later;
  // One table, once: nothing scrolled into view below it.
  EXPECT_EQ(later.find("kpictl watch", 1), std::string::npos) << later;
}

}  // namespace
}  // namespace kpistream::testing
