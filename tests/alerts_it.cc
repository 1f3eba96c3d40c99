// Alerts end to end: a real Kafka broker, kpid with the default catalog, and
// two real Alertmanagers (Debian's prometheus-alertmanager) on loopback.
// kpigen plays the "churn-spike" story in phases; the test watches the
// ChurnRateSpike alert go pending, fire, survive a kill -9 of kpid without a
// second notification, reach an Alertmanager that was down when it fired,
// and resolve.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "kpistream/v1/alerts.grpc.pb.h"
#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr char kRule[] = "ChurnRateSpike";
constexpr int kPartitions = 4;

// Day 0 of the story: 80 days ago at UTC midnight, so the whole story lies in
// the past (event time drives the alert clock here).
const int64_t kStart =
    (std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() /
         86400 -
     80) *
    86400;

class AlertsIT : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("alerts");
    broker_ = std::make_unique<KafkaBroker>(dir_->path());
    ASSERT_TRUE(broker_->ok()) << broker_->error();
  }

  // Plays days [from, to) of the churn-spike story into the topics.
  void Play(double from, double to) {
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "al.", "--partitions",
                        std::to_string(kPartitions), "--scenario", "churn-spike", "--start-time",
                        std::to_string(kStart), "--from-day", std::to_string(from), "--to-day", std::to_string(to)},
                       dir_->path() + "/kpigen.log"),
              0)
        << "kpigen failed; see " << dir_->path() << "/kpigen.log";
  }

  std::unique_ptr<Kpid> StartKpid(const std::string& extra) {
    auto kpid = std::make_unique<Kpid>(KpidOptions{.brokers = broker_->bootstrap(),
                                                   .topic_prefix = "al.",
                                                   .group_id = "kpid-alerts",
                                                   .state_dir = dir_->path() + "/state",
                                                   .work_dir = dir_->path(),
                                                   .extra_config = extra});
    EXPECT_TRUE(kpid->WaitStarted()) << kpid->process().LogTail();
    EXPECT_TRUE(kpid->WaitServing()) << kpid->process().LogTail();
    alerts_ = v1::AlertService::NewStub(grpc::CreateChannel(kpid->grpc_address(), grpc::InsecureChannelCredentials()));
    return kpid;
  }

  // The rule's alert as kpid reports it over gRPC, once `pred` holds.
  std::optional<v1::Alert> WaitAlert(Kpid& kpid, const std::function<bool(const v1::Alert&)>& pred,
                                     std::chrono::seconds timeout = 120s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && kpid.process().Running()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      v1::ListAlertsResponse resp;
      if (alerts_->ListAlerts(&ctx, {}, &resp).ok()) {
        for (const auto& a : resp.alerts()) {
          if (a.rule() == kRule && pred(a)) return a;
        }
      }
      std::this_thread::sleep_for(200ms);
    }
    return std::nullopt;
  }

  // Alertmanager's view: the rule's alerts from GET /api/v2/alerts.
  static std::vector<json> AmAlerts(const Alertmanager& am) {
    std::vector<json> out;
    const auto body = HttpGet(am.address(), "/api/v2/alerts");
    const auto all = json::parse(body, nullptr, false);
    if (!all.is_array()) return out;
    for (const auto& a : all) {
      if (a["labels"].value("alertname", "") == kRule) out.push_back(a);
    }
    return out;
  }

  // Webhook notifications Alertmanager delivered for the rule's group.
  static std::vector<json> Notifications(const HttpSink& sink) {
    std::vector<json> out;
    for (const auto& b : sink.Bodies()) {
      auto n = json::parse(b, nullptr, false);
      if (n.is_object() && n["groupLabels"].value("alertname", "") == kRule) out.push_back(n);
    }
    return out;
  }

  static bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (cond()) return true;
      std::this_thread::sleep_for(200ms);
    }
    return cond();
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<KafkaBroker> broker_;
  std::unique_ptr<v1::AlertService::Stub> alerts_;
};

TEST_F(AlertsIT, ChurnSpikeFiresOnceSurvivesKillNineReachesLateAlertmanagerAndResolves) {
  HttpSink am_a_sink, am_b_sink, webhook;
  // Alertmanager B runs throughout; A is down when the alert fires and is
  // started later on its reserved port (an HA pair, as kpid sees it).
  const int port_a = FreePort();
  const int port_b = FreePort();
  auto am_b = std::make_unique<Alertmanager>(dir_->path() + "/am-b", am_b_sink.url(), port_b);
  ASSERT_TRUE(am_b->WaitReady()) << am_b->process().LogTail();
  const std::string am_a_url = "http://127.0.0.1:" + std::to_string(port_a);
  const std::string extra = "alerting:\n  alertmanagers: [\"" + am_a_url + "\", \"" + am_b->url() +
                            "\"]\n  webhooks: [\"" + webhook.url() +
                            "\"]\n  evaluation_interval: 1s\n  resend_interval: 2s\n  clock: event_time\n";

  Play(0, 46);
  auto kpid = StartKpid(extra);
  auto pending = WaitAlert(*kpid, [](const v1::Alert& a) { return a.state() == v1::ALERT_STATE_PENDING; });
  ASSERT_TRUE(pending) << kpid->process().LogTail();
  EXPECT_GT(pending->value(), 4.0);
  EXPECT_GE(pending->active_since().seconds(), kStart + 45 * 86400);

  // Two more days of the spike: the `for: 2d` elapses in event time.
  Play(46, 48.5);
  auto firing = WaitAlert(*kpid, [](const v1::Alert& a) { return a.state() == v1::ALERT_STATE_FIRING; });
  ASSERT_TRUE(firing) << kpid->process().LogTail();
  EXPECT_EQ(firing->active_since().seconds(), pending->active_since().seconds());
  EXPECT_GE(firing->firing_since().seconds() - firing->active_since().seconds(), 2 * 86400);
  EXPECT_EQ(firing->labels().at("severity"), "critical");
  EXPECT_EQ(firing->labels().at("team"), "customer-success");
  EXPECT_NE(firing->annotations().at("summary").find("Monthly logo churn is "), std::string::npos);

  // Delivered to the Alertmanager that is up, to the webhook, and exported.
  ASSERT_TRUE(WaitFor([&] { return AmAlerts(*am_b).size() == 1 && Notifications(am_b_sink).size() == 1; }, 60s))
      << am_b->process().LogTail() << kpid->process().LogTail();
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& b : webhook.Bodies()) {
          if (b.find(kRule) != std::string::npos) return true;
        }
        return false;
      },
      30s));
  const auto metrics = kpid->Scrape();
  EXPECT_EQ(MetricSum(metrics, "ALERTS", {{"alertname", kRule}, {"alertstate", "firing"}}), 1);
  EXPECT_EQ(MetricSum(metrics, "kpistream_alert_target_up", {{"target", am_a_url + "/api/v2/alerts"}}), 0);
  EXPECT_EQ(MetricSum(metrics, "kpistream_alert_target_up", {{"target", am_b->url() + "/api/v2/alerts"}}), 1);
  EXPECT_GT(MetricSum(metrics, "kpistream_alert_notifications_total",
                      {{"result", "failed"}, {"target", am_a_url + "/api/v2/alerts"}}),
            0);

  // Alertmanager A comes up: the alert arrives with its original start.
  Alertmanager am_a(dir_->path() + "/am-a", am_a_sink.url(), port_a);
  ASSERT_TRUE(am_a.WaitReady()) << am_a.process().LogTail();
  ASSERT_TRUE(WaitFor([&] { return AmAlerts(am_a).size() == 1 && Notifications(am_a_sink).size() == 1; }, 60s))
      << am_a.process().LogTail() << kpid->process().LogTail();
  for (const auto* am : {&am_a, am_b.get()}) {
    const auto a = AmAlerts(*am).at(0);
    EXPECT_EQ(a["status"]["state"], "active");
    EXPECT_EQ(a["labels"]["alertname"], kRule);
    EXPECT_EQ(a["labels"]["severity"], "critical");
    EXPECT_EQ(a["labels"]["team"], "customer-success");
    EXPECT_EQ(a["labels"]["kpi"], "logo_churn_rate");
    EXPECT_NE(a["annotations"].value("summary", "").find("Monthly logo churn is "), std::string::npos);
    EXPECT_EQ(a["annotations"]["runbook_url"], "https://runbooks.kpistream.dev/churn-rate-spike");
    EXPECT_EQ(a["annotations"]["owner"], "head-of-cs");
  }
  const std::string starts_at = AmAlerts(*am_b).at(0)["startsAt"];
  EXPECT_EQ(AmAlerts(am_a).at(0)["startsAt"], starts_at);

  // kill -9 while firing, then restart on the same state: the alert is
  // still firing since the same moment, and no Alertmanager notifies again.
  kpid->process().Signal(SIGKILL);
  kpid->process().Wait(10s);
  kpid = StartKpid(extra);
  auto after = WaitAlert(
      *kpid, [](const v1::Alert& a) { return a.state() == v1::ALERT_STATE_FIRING; }, 10s);
  ASSERT_TRUE(after) << "the firing alert was lost by kill -9\n" << kpid->process().LogTail();
  EXPECT_EQ(after->firing_since().seconds(), firing->firing_since().seconds());
  EXPECT_EQ(after->fingerprint(), firing->fingerprint());
  // Several resend intervals and evaluations later:
  ASSERT_TRUE(WaitFor([&] { return MetricSum(kpid->Scrape(), "kpistream_alerts_sent_total") >= 6; }, 30s));
  std::this_thread::sleep_for(3s);  // > Alertmanager's group_interval
  for (const auto* am : {&am_a, am_b.get()}) {
    const auto now = AmAlerts(*am);
    ASSERT_EQ(now.size(), 1u);
    EXPECT_EQ(now[0]["startsAt"], starts_at);
    const auto groups = json::parse(HttpGet(am->address(), "/api/v2/alerts/groups"), nullptr, false);
    int rule_groups = 0;
    for (const auto& g : groups) rule_groups += g["labels"].value("alertname", "") == kRule;
    EXPECT_EQ(rule_groups, 1);
  }
  EXPECT_EQ(Notifications(am_a_sink).size(), 1u);
  EXPECT_EQ(Notifications(am_b_sink).size(), 1u);

  // Alertmanager B restarts (alerts live in its memory; its notification
  // log on disk): kpid's resend puts the alert back within a resend
  // interval, and B does not page again.
  am_b.reset();
  am_b = std::make_unique<Alertmanager>(dir_->path() + "/am-b", am_b_sink.url(), port_b);
  ASSERT_TRUE(am_b->WaitReady()) << am_b->process().LogTail();
  ASSERT_TRUE(WaitFor([&] { return AmAlerts(*am_b).size() == 1; }, 30s)) << kpid->process().LogTail();
  EXPECT_EQ(AmAlerts(*am_b).at(0)["startsAt"], starts_at);
  std::this_thread::sleep_for(3s);  // > group_wait + group_interval
  EXPECT_EQ(Notifications(am_b_sink).size(), 1u);

  // The spike leaves the 30-day window: resolved, and both Alertmanagers
  // send the resolution.
  Play(48.5, 80);
  auto resolved = WaitAlert(*kpid, [](const v1::Alert& a) { return a.state() == v1::ALERT_STATE_RESOLVED; });
  ASSERT_TRUE(resolved) << kpid->process().LogTail();
  EXPECT_GE(resolved->resolved_at().seconds(), kStart + 75 * 86400);
  for (const auto* sink : {&am_a_sink, &am_b_sink}) {
    ASSERT_TRUE(WaitFor(
        [&] {
          const auto n = Notifications(*sink);
          return !n.empty() && n.back()["status"] == "resolved";
        },
        60s))
        << "no resolved notification";
    const auto n = Notifications(*sink);
    ASSERT_EQ(n.size(), 2u);
    EXPECT_EQ(n[0]["status"], "firing");
    EXPECT_EQ(n[1]["alerts"].at(0)["startsAt"], n[0]["alerts"].at(0)["startsAt"]);
    EXPECT_EQ(n[1]["alerts"].at(0)["status"], "resolved");
  }
  EXPECT_EQ(MetricSum(kpid->Scrape(), "ALERTS", {{"alertname", kRule}}), 0);

  kpid->process().Signal(SIGTERM);
  EXPECT_EQ(kpid->process().Wait(30s), std::optional<int>(0)) << kpid->process().LogTail();
}

// Replicas (scale-out): one leader, elected through Kafka, evaluates the
// rules on cluster-wide values and sends the alerts; its alert state lives
// in a compacted topic. Three replicas share the partitions; the alert
// fires; the leader is killed with kill -9. Another replica takes the lead
// from the replicated state: the alert is still firing since the same
// moment, every replica lists it, and Alertmanager has notified once.
TEST_F(AlertsIT, AFiringAlertSurvivesTheLeadersKillNineWithOneNotification) {
  HttpSink am_sink;
  Alertmanager am(dir_->path() + "/am", am_sink.url(), FreePort());
  ASSERT_TRUE(am.WaitReady()) << am.process().LogTail();
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) addresses.push_back("127.0.0.1:" + std::to_string(FreePort()));
  std::string peers;
  for (const auto& a : addresses) peers += (peers.empty() ? "" : ", ") + a;
  const std::string extra = "alerting:\n  alertmanagers: [\"" + am.url() +
                            "\"]\n  evaluation_interval: 1s\n  resend_interval: 5s\n  clock: event_time\n"
                            "cluster:\n  peers: [" +
                            peers + "]\n  max_wait: 1s\n";
  Play(0, 46);
  std::vector<std::unique_ptr<Kpid>> r(3);
  std::vector<std::unique_ptr<v1::AlertService::Stub>> stubs(3);
  auto start = [&](int i) {
    const auto work = dir_->path() + "/r" + std::to_string(i);
    std::filesystem::create_directories(work);
    r[i] = std::make_unique<Kpid>(KpidOptions{.brokers = broker_->bootstrap(),
                                              .topic_prefix = "al.",
                                              .group_id = "kpid-alerts-ha",
                                              .state_dir = work + "/state",
                                              .work_dir = work,
                                              .changelog = true,
                                              .grpc_listen = addresses[static_cast<size_t>(i)],
                                              .extra_config = extra,
                                              .extra_args = {"--group-instance-id", "ha-" + std::to_string(i)}});
    ASSERT_TRUE(r[i]->WaitStarted()) << r[i]->process().LogTail();
    stubs[i] = v1::AlertService::NewStub(grpc::CreateChannel(r[i]->grpc_address(), grpc::InsecureChannelCredentials()));
  };
  for (int i = 0; i < 3; ++i) {
    start(i);
    ASSERT_FALSE(HasFatalFailure());
  }
  auto alert_on = [&](int i, v1::AlertState state) -> std::optional<v1::Alert> {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::ListAlertsResponse resp;
    if (!stubs[i]->ListAlerts(&ctx, {}, &resp).ok()) return std::nullopt;
    for (const auto& a : resp.alerts()) {
      if (a.rule() == kRule && a.state() == state) return a;
    }
    return std::nullopt;
  };
  auto tails = [&] {
    std::string out;
    for (int i = 0; i < 3; ++i) {
      if (r[i]) out += "--- replica ha-" + std::to_string(i) + "\n" + r[i]->process().LogTail();
    }
    return out;
  };
  auto leaders = [&](const std::vector<int>& live) {
    std::vector<int> out;
    for (int i : live) {
      if (MetricSum(r[i]->Scrape(), "kpistream_alert_leader") == 1) out.push_back(i);
    }
    return out;
  };
  ASSERT_TRUE(WaitFor([&] { return alert_on(0, v1::ALERT_STATE_PENDING).has_value(); }, 180s)) << tails();
  Play(46, 48.5);
  // Firing, listed alike by every replica (the followers hold the leader's
  // state), and notified once.
  std::optional<v1::Alert> firing;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (int i = 0; i < 3; ++i) {
          if (!alert_on(i, v1::ALERT_STATE_FIRING)) return false;
        }
        firing = alert_on(0, v1::ALERT_STATE_FIRING);
        return true;
      },
      120s))
      << tails();
  ASSERT_TRUE(WaitFor([&] { return AmAlerts(am).size() == 1 && Notifications(am_sink).size() == 1; }, 60s))
      << am.process().LogTail();
  const std::string starts_at = AmAlerts(am).at(0)["startsAt"];
  const auto lead = leaders({0, 1, 2});
  ASSERT_EQ(lead.size(), 1u) << "one leader among three replicas";
  double alerts_series = 0;
  for (int i = 0; i < 3; ++i) alerts_series += MetricSum(r[i]->Scrape(), "ALERTS", {{"alertname", kRule}});
  EXPECT_EQ(alerts_series, 1) << "ALERTS is exported by the leader only";

  // kill -9 the leader. Another takes the lead from the replicated state.
  const int dead = lead[0];
  const auto killed_at = Clock::now();
  r[dead]->process().Signal(SIGKILL);
  ASSERT_TRUE(r[dead]->process().Wait(10s));
  std::vector<int> live;
  for (int i = 0; i < 3; ++i) {
    if (i != dead) live.push_back(i);
  }
  ASSERT_TRUE(WaitFor([&] { return leaders(live).size() == 1; }, 60s)) << tails();
  const int next = leaders(live).at(0);
  const double lead_s = std::chrono::duration<double>(Clock::now() - killed_at).count();
  // It evaluates again (on a complete cluster view, once the dead
  // replica's partitions have moved) and sends for a few resend intervals.
  const double evaluations = MetricSum(r[next]->Scrape(), "kpistream_alert_evaluations_total");
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto m = r[next]->Scrape();
        return MetricSum(m, "kpistream_alert_evaluations_total") > evaluations + 3 &&
               MetricSum(m, "kpistream_alerts_sent_total") >= 2;
      },
      90s))
      << tails();
  const auto sent_at = Clock::now();
  for (int i : live) {
    auto a = alert_on(i, v1::ALERT_STATE_FIRING);
    ASSERT_TRUE(a) << "replica " << i << " lost the firing alert";
    EXPECT_EQ(a->firing_since().seconds(), firing->firing_since().seconds());
    EXPECT_EQ(a->fingerprint(), firing->fingerprint());
  }
  std::this_thread::sleep_for(3s);  // > Alertmanager's group_interval
  const auto now = AmAlerts(am);
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0]["startsAt"], starts_at);
  EXPECT_EQ(now[0]["status"]["state"], "active");
  EXPECT_EQ(Notifications(am_sink).size(), 1u) << "the failover paged again";
  std::printf(
      "[ measure  ] leader ha-%d killed; ha-%d leads %.1f s later and has sent %.0f alert(s) %.1f s after the kill; "
      "%zu notification(s) at Alertmanager\n",
      dead, next, lead_s, MetricSum(r[next]->Scrape(), "kpistream_alerts_sent_total"),
      std::chrono::duration<double>(sent_at - killed_at).count(), Notifications(am_sink).size());
  for (int i : live) {
    r[i]->process().Signal(SIGTERM);
    EXPECT_EQ(r[i]->process().Wait(60s), std::optional<int>(0)) << r[i]->process().LogTail();
  }
}

}  // namespace
}  // namespace kpistream::testing
