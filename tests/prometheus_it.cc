// Grafana's path, tested on a real Prometheus (Debian's prometheus) that
// scrapes kpid while its topics hold kpigen's events on a real broker:
//   - KPI values, ungrouped and per exported breakdown, as Prometheus stores
//     them, equal kpid's gRPC answers for the same window;
//   - exported groups add up to the whole (count KPIs summed; ratios through
//     the generated recording rules);
//   - every PromQL expression of every shipped dashboard
//     (deploy/grafana/dashboards) and rule (deploy/prometheus) succeeds and
//     returns data.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "kpi/catalog.h"
#include "kpi/prometheus_names.h"
#include "tests/harness.h"
#include "tools/kpictl/generate.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kEvents = 200000;  // in all
constexpr int kHistory = 60000;  // of them a month ago

std::string SourceDir() { return KPISTREAM_SOURCE_DIR; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Windows whose value does not move while the test runs: the recent events
// span the last 6 hours, the older ones lie before 30 days.
bool StableWindow(const std::string& w) { return w == "24h" || w == "7d" || w == "30d" || w == "all"; }

bool Near(double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max({1.0, std::fabs(a), std::fabs(b)}); }

class PrometheusIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("prometheus");
    broker_ = new KafkaBroker(dir_->path());
    ASSERT_TRUE(broker_->ok()) << broker_->error();
    // History 45 to 31 days ago (outside every rolling window up to 30d:
    // the MRR at a 30-day window's start, which churn, NRR and growth rates
    // divide by), then the last 6 hours (inside every window the test
    // compares, so no value moves while it runs).
    const int64_t now_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "pm.", "--partitions", "4",
                        "--count", std::to_string(kHistory), "--seed", "12", "--start-time",
                        std::to_string(now_s - 45 * 86400), "--span", "14d"},
                       dir_->path() + "/kpigen-history.log"),
              0);
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "pm.", "--count",
                        std::to_string(kEvents - kHistory), "--seed", "11", "--span", "6h"},
                       dir_->path() + "/kpigen.log"),
              0);
    kpid_ = new Kpid(KpidOptions{.brokers = broker_->bootstrap(),
                                 .topic_prefix = "pm.",
                                 .group_id = "kpid-prometheus",
                                 .state_dir = dir_->path() + "/state",
                                 .work_dir = dir_->path()});
    ASSERT_TRUE(kpid_->WaitStarted()) << kpid_->process().LogTail();
    ASSERT_TRUE(kpid_->WaitServing()) << kpid_->process().LogTail();
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (MetricSum(kpid_->Scrape(), "kpistream_records_applied_total") < kEvents &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(200ms);
    }
    ASSERT_GE(MetricSum(kpid_->Scrape(), "kpistream_records_applied_total"), kEvents);
    auto cat = kpi::ParseCatalog(ReadAll(SourceDir() + "/config/kpis.yaml"), "config/kpis.yaml");
    ASSERT_TRUE(cat.ok()) << cat.status();
    catalog_ = new kpi::Catalog(std::move(*cat));
    prometheus_ = new Prometheus(dir_->path() + "/prometheus", {kpid_->metrics_address()},
                                 {SourceDir() + "/deploy/prometheus/kpistream-kpi-rules.yaml"}, FreePort());
    ASSERT_TRUE(prometheus_->WaitReady()) << prometheus_->process().LogTail();
    // gRPC traffic for the server metrics, then enough scrapes for rate().
    for (int i = 0; i < 5; ++i) Get("ctr", "24h");
    std::this_thread::sleep_for(20s);
  }
  static void TearDownTestSuite() {
    delete prometheus_;
    delete kpid_;
    delete broker_;
    delete catalog_;
    delete dir_;
  }

  // GetKpi over gRPC.
  static v1::GetKpiResponse Get(const std::string& kpi, const std::string& window, const std::string& group_by = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::GetKpiRequest req;
    req.set_kpi(kpi);
    req.set_window(window);
    req.set_group_by(group_by);
    v1::GetKpiResponse resp;
    const auto st = kpid_->stub().GetKpi(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << kpi << " " << window << ": " << st.error_message();
    return resp;
  }

  // An instant query's result vector (status checked).
  static json Query(const std::string& promql) {
    const auto body = prometheus_->Query(promql);
    const auto j = json::parse(body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.value("status", "") == "success") << promql << ": " << body.substr(0, 500);
    if (!j.is_object() || !j.contains("data")) return json::array();
    return j["data"]["result"];
  }

  static std::optional<double> Value(const json& sample) {
    const auto v = sample["value"][1].get<std::string>();
    if (v == "NaN") return std::nullopt;
    return std::stod(v);
  }

  static TempDir* dir_;
  static KafkaBroker* broker_;
  static Kpid* kpid_;
  static Prometheus* prometheus_;
  static kpi::Catalog* catalog_;
};

TempDir* PrometheusIT::dir_ = nullptr;
KafkaBroker* PrometheusIT::broker_ = nullptr;
Kpid* PrometheusIT::kpid_ = nullptr;
Prometheus* PrometheusIT::prometheus_ = nullptr;
kpi::Catalog* PrometheusIT::catalog_ = nullptr;

TEST_F(PrometheusIT, KpiValuesInPrometheusEqualGrpcAnswers) {
  int compared = 0;
  for (const auto& k : catalog_->kpis) {
    for (const auto& w : k.windows) {
      if (!StableWindow(w)) continue;
      const auto resp = Get(k.name, w);
      const auto got = Query(fmt::format("{}{{window=\"{}\",breakdown=\"\"}}", kpi::KpiMetricName(k), w));
      if (resp.values_size() == 0 || !resp.values(0).has_value()) {
        EXPECT_TRUE(got.empty()) << k.name << " " << w << ": Prometheus has a value gRPC has not";
        continue;
      }
      ASSERT_EQ(got.size(), 1u) << k.name << " " << w;
      const auto v = Value(got[0]);
      ASSERT_TRUE(v) << k.name;
      EXPECT_TRUE(Near(*v, resp.values(0).value()))
          << k.name << " " << w << ": " << *v << " vs " << resp.values(0).value();
      ++compared;
    }
  }
  std::printf("[ measure  ] %d ungrouped KPI values equal in Prometheus and over gRPC\n", compared);
  EXPECT_GT(compared, 40);
}

TEST_F(PrometheusIT, BreakdownsEqualGrpcAndAddUpToTheWhole) {
  int groups = 0, sums = 0;
  for (const auto& k : catalog_->kpis) {
    for (const auto& e : k.exports) {
      const auto breakdown = kpi::BreakdownLabel(e);
      for (const auto& w : k.windows) {
        if (!StableWindow(w)) continue;
        const auto got =
            Query(fmt::format("{}{{window=\"{}\",breakdown=\"{}\"}}", kpi::KpiMetricName(k), w, breakdown));
        if (e.top == 0) {
          // Every group, as gRPC groups it.
          const auto resp = Get(k.name, w, breakdown);
          std::map<std::string, double> want;
          for (const auto& v : resp.values()) {
            if (v.has_value()) want[v.group().at(e.group_by[0])] = v.value();
          }
          std::map<std::string, double> have;
          for (const auto& s : got) have[s["metric"][e.group_by[0]].get<std::string>()] = *Value(s);
          ASSERT_EQ(have.size(), want.size()) << k.name << " by " << breakdown << " " << w;
          for (const auto& [g, v] : want) {
            EXPECT_TRUE(Near(have[g], v)) << k.name << " " << g << ": " << have[g] << " vs " << v;
            ++groups;
          }
        }
        // Count and sum KPIs: the groups add up to the whole.
        const auto& in = k.inputs;
        const bool additive =
            k.expr.op == kpi::Expr::Op::kRef && in.size() == 1 && in[0].window.empty() &&
            (catalog_->measures[static_cast<size_t>(in[0].measure)].aggregation == kpi::Aggregation::kCount ||
             catalog_->measures[static_cast<size_t>(in[0].measure)].aggregation == kpi::Aggregation::kSum);
        if (additive && !got.empty()) {
          double total = 0;
          for (const auto& s : got) total += *Value(s);
          const auto whole = Get(k.name, w);
          ASSERT_GT(whole.values_size(), 0);
          EXPECT_TRUE(Near(total, whole.values(0).value()))
              << k.name << " " << w << ": groups add up to " << total << ", the whole is " << whole.values(0).value();
          ++sums;
        }
      }
    }
  }
  // Ratios: the recording rules' sum of numerators / sum of denominators.
  int ratios = 0;
  for (const auto& s : Query("{__name__=~\"window_breakdown:.*:ratio_of_sums\"}")) {
    const std::string record = s["metric"]["__name__"];
    const std::string metric = record.substr(record.find(':') + 1, record.rfind(':') - record.find(':') - 1);
    const std::string w = s["metric"]["window"];
    if (!StableWindow(w)) continue;
    const auto whole = Query(fmt::format("{}{{window=\"{}\",breakdown=\"\"}}", metric, w));
    ASSERT_EQ(whole.size(), 1u) << metric;
    EXPECT_TRUE(Near(*Value(s), *Value(whole[0])))
        << record << " " << w << ": " << *Value(s) << " vs " << *Value(whole[0]);
    ++ratios;
  }
  std::printf("[ measure  ] %d groups equal over gRPC; %d count/sum breakdowns and %d ratios add up to the whole\n",
              groups, sums, ratios);
  EXPECT_GT(groups, 20);
  EXPECT_GT(sums, 3);
  EXPECT_GT(ratios, 5);
}

// Grafana's variables, as a query of Prometheus would see them.
std::string Substitute(std::string expr) {
  expr = std::regex_replace(expr, std::regex("\\$window"), "24h");
  expr = std::regex_replace(expr, std::regex("\\$__rate_interval"), "1m");
  expr = std::regex_replace(expr, std::regex("\\$[a-z_]+"), ".*");
  return expr;
}

TEST_F(PrometheusIT, EveryDashboardAndRuleExpressionReturnsData) {
  std::vector<std::string> failed;
  int run = 0;
  auto check = [&](const std::string& where, std::string expr) {
    // label_values(selector, label): the selector must return the label.
    std::smatch m;
    std::string label;
    if (std::regex_match(expr, m, std::regex("label_values\\((.*), *([a-z_]+)\\)"))) {
      label = m[2];  // before expr, which m points into, is replaced
      expr = m[1].str();
    }
    const auto result = Query(Substitute(expr));
    ++run;
    bool ok = !result.empty();
    if (ok && !label.empty()) ok = result[0]["metric"].contains(label);
    if (!ok) failed.push_back(where + ": " + expr);
  };
  for (const auto& entry : fs::directory_iterator(SourceDir() + "/deploy/grafana/dashboards")) {
    for (const auto& e : tools::DashboardExpressions(ReadAll(entry.path().string()))) {
      check(entry.path().filename().string(), e);
    }
  }
  const auto rules = YAML::LoadFile(SourceDir() + "/deploy/prometheus/kpistream-kpi-rules.yaml");
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      if (r["record"]) {
        check("rule " + r["record"].as<std::string>(), r["record"].as<std::string>());
        continue;
      }
      // An alert's condition is false on healthy data: its value must exist.
      std::string expr = r["expr"].as<std::string>();
      expr = std::regex_replace(expr, std::regex(" *(>|<|>=|<=|==) *-?[0-9.e+]+$"), "");
      // Prometheus holds no week-old samples in a test: the series now.
      std::smatch m;
      if (expr.find(" offset ") != std::string::npos &&
          std::regex_search(expr, m, std::regex("^\\(([a-z_]+\\{[^}]*\\})"))) {
        expr = m[1];
      }
      check("alert " + r["alert"].as<std::string>(), expr);
    }
  }
  std::string list;
  for (const auto& f : failed) list += "\n  " + f;
  EXPECT_TRUE(failed.empty()) << failed.size() << " of " << run << " expressions returned no data:" << list;
  std::printf("[ measure  ] %d dashboard and rule expressions run on Prometheus, %zu without data\n", run,
              failed.size());
  const auto series = MetricSum(kpid_->Scrape(), "kpistream_kpi_series");
  const auto scrape = Query("scrape_duration_seconds{job=\"kpistream\"}");
  const auto samples = Query("scrape_samples_scraped{job=\"kpistream\"}");
  std::printf("[ measure  ] default catalog: %.0f KPI series, %s samples per scrape, scrape %s s\n", series,
              samples.empty() ? "?" : samples[0]["value"][1].get<std::string>().c_str(),
              scrape.empty() ? "?" : scrape[0]["value"][1].get<std::string>().c_str());
}

}  // namespace
}  // namespace kpistream::testing
