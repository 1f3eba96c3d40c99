// The alert evaluator on a real RocksDB store with a fake clock: rules over
// real partials, instances per group, restart in each state, the transition
// log, and the gRPC AlertService (list, watch, resume) over a real server.
#include "alerting/alerter.h"
#include "alerting/notifier.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "ingest/accumulator.h"
#include "ingest/local_ingest.h"
#include "kpistream/events/v1/events.pb.h"
#include "kpistream/internal/v1/alert_state.pb.h"
#include "kpistream/v1/alerts.grpc.pb.h"
#include "services/grpc_server.h"

namespace kpistream::services {
namespace {

using alerting::Alerter;
using alerting::AlerterOptions;
using alerting::AlertSources;
using events::v1::CampaignEvent;

constexpr int64_t kDay = 1763856000;  // a UTC midnight

class AlerterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_alerter_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    auto cat = kpi::ParseCatalog(R"yaml(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
kpis:
  clicks: {formula: clicks, unit: count, windows: [10m]}
alerts:
  ManyClicks:
    kpi: clicks
    window: 10m
    group_by: channel
    condition: "> 5"
    for: 2m
    severity: critical
    labels: {team: ads}
    annotations: {summary: "{{ $value }} clicks on {{ $labels.channel }} (over {{ $threshold }})"}
  Quiet: {absence: {family: product, for: 10m}, severity: warning}
)yaml",
                                 "t.yaml");
    ASSERT_TRUE(cat.ok()) << cat.status();
    catalog_ = std::move(*cat);
    OpenStore();
  }
  void TearDown() override {
    alerter_.reset();
    ingest_.reset();
    queries_.reset();
    source_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void OpenStore() {
    auto store = state::Store::Open({.path = dir_.string(), .retention_fine_s = 0, .retention_hour_s = 0});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ids_ = *kpi::BindStateIds(catalog_, store_.get());
    source_ = std::make_unique<query::LocalPartialSource>(*store_);
    queries_ = std::make_unique<query::QueryService>(catalog_, ids_, *source_, query_clock_,
                                                     query::QueryOptions{.retention = {}});
    ingest_ =
        std::make_unique<ingest::LocalIngest>(catalog_, ids_, store_.get(), ingest::ApplierOptions{}, ingest_clock_);
  }
  // A fresh alerter on the same store, as after a restart.
  void StartAlerter() {
    alerter_.reset();
    AlerterOptions o;
    o.now_ms = [this] { return now_s_ * 1000; };
    // Evaluations a minute apart: steps of up to 4 minutes are not gaps.
    o.eval_interval_ms = 60000;
    o.resolved_retention_ms = 60 * 1000;
    o.max_transitions = max_transitions_;
    AlertSources src;
    src.caught_up = [this] { return ready_ && !replaying_; };
    src.replaying = [this] { return replaying_; };
    src.newest_event_ms = [this](std::optional<kpi::Family> f) {
      // Product events keep arriving unless a test says otherwise.
      if (f != kpi::Family::kProduct) return int64_t{0};
      return newest_product_ms_ < 0 ? now_s_ * 1000 : newest_product_ms_;
    };
    auto a = Alerter::Create(o, catalog_, *queries_, store_.get(), src, query_clock_);
    ASSERT_TRUE(a.ok()) << a.status();
    alerter_ = std::move(*a);
  }
  // The gRPC front over this fixture's catalog, queries and alerter.
  std::unique_ptr<GrpcServer> StartGrpc() {
    auto view = [this] {
      return ServingView{.catalog = &catalog_, .queries = queries_.get(), .alerter = alerter_.get()};
    };
    auto server = GrpcServer::Start({.listen = "127.0.0.1:0"}, view, query_clock_);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }
  // n clicks of a channel at at_s written as partials directly, bypassing
  // decoding: for dimension bytes the project's own event schema cannot
  // carry (invalid UTF-8), which other sources of values may.
  void ClicksDirect(const std::string& channel, int n, int64_t at_s) {
    ingest::Accumulator acc(catalog_, ids_);
    std::string key;
    state::AppendGroupValue(&key, channel);
    for (int i = 0; i < n; ++i) acc.Add({.measure = 0, .time_ms = at_s * 1000}, state::SourceId(99, 0), key);
    state::WriteBatch b(*store_);
    acc.Flush(&b);
    b.PutOffset(state::SourceId(99, 0), ++direct_offset_, at_s * 1000);
    ASSERT_TRUE(store_->Commit(&b).ok());
  }
  // n clicks at at_s, through the engine's own step, committed.
  void Clicks(const std::string& channel, int n, int64_t at_s) {
    for (int i = 0; i < n; ++i) {
      CampaignEvent e;
      e.set_event_id(fmt::format("c{}", ++clicks_));
      e.set_type(events::v1::CAMPAIGN_CLICK);
      e.mutable_event_time()->set_seconds(at_s);
      e.set_channel(channel);
      ASSERT_EQ(*ingest_->Apply(1, 0, kpi::Family::kCampaign, e.SerializeAsString()),
                ingest::PartitionApplier::Outcome::kApplied);
    }
    ASSERT_TRUE(ingest_->Commit().ok());
  }
  // State of the ManyClicks instance of a channel ("" when absent).
  std::string StateOf(const std::string& channel) {
    for (const auto& a : alerter_->Alerts()) {
      if (a.rule == "ManyClicks" && a.labels.at("channel") == channel) {
        return std::string(v1::AlertState_Name(static_cast<v1::AlertState>(a.state)));
      }
    }
    return "";
  }
  // A fresh alerter whose ManyClicks instance for "search" is pending at t0.
  void StartWithSearchPending(int64_t t0) {
    StartAlerter();
    Clicks("search", 8, t0 - 30);
    Eval(t0);
    ASSERT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  }
  void Eval(int64_t at_s) {
    now_s_ = at_s;
    query_clock_.SetMs(at_s * 1000);
    ASSERT_TRUE(alerter_->EvaluateOnce().ok());
  }

  std::filesystem::path dir_;
  kpi::Catalog catalog_;
  kpi::StateIds ids_;
  state::FakeClock query_clock_{kDay * 1000};
  // Events in these tests are from 2025: the ingest clock is far enough
  // ahead that none is refused as future.
  state::FakeClock ingest_clock_{kDay * 1000 + 365 * 86400 * 1000LL};
  std::unique_ptr<state::Store> store_;
  std::unique_ptr<query::LocalPartialSource> source_;
  std::unique_ptr<query::QueryService> queries_;
  std::unique_ptr<ingest::LocalIngest> ingest_;
  std::unique_ptr<Alerter> alerter_;
  int64_t now_s_ = kDay;
  int64_t newest_product_ms_ = -1;  // -1: the clock's now
  bool ready_ = true;
  bool replaying_ = false;
  size_t max_transitions_ = 10000;
  int clicks_ = 0;
  int64_t direct_offset_ = 0;
};

TEST_F(AlerterTest, OneInstancePerGroupThroughItsStates) {
  StartAlerter();
  const int64_t t0 = kDay + 3600;
  Clicks("search", 8, t0 - 30);
  Clicks("social", 2, t0 - 30);
  Eval(t0);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  EXPECT_EQ(StateOf("social"), "");  // below the threshold: not tracked
  Eval(t0 + 60);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  Eval(t0 + 120);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  const auto alerts = alerter_->Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  const auto& a = alerts[0];
  EXPECT_EQ(a.labels.at("alertname"), "ManyClicks");
  EXPECT_EQ(a.labels.at("severity"), "critical");
  EXPECT_EQ(a.labels.at("team"), "ads");
  EXPECT_EQ(a.labels.at("kpi"), "clicks");
  EXPECT_EQ(a.annotations.at("summary"), "8 clicks on search (over 5)");
  EXPECT_EQ(a.value, 8);
  EXPECT_EQ(a.firing_since_ms, (t0 + 120) * 1000);
  // The clicks leave the 10-minute window: resolved.
  Eval(t0 + 600);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  // Transitions: pending, firing, resolved, with increasing sequences.
  std::vector<alerting::AlertTransition> ts;
  ASSERT_TRUE(alerter_->TransitionsAfter(0, 100, &ts));
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_EQ(ts[0].from, alerting::AlertState::kInactive);
  EXPECT_EQ(ts[1].alert.state, alerting::AlertState::kFiring);
  EXPECT_EQ(ts[2].alert.state, alerting::AlertState::kResolved);
  EXPECT_EQ(ts[2].sequence, 3u);
  EXPECT_EQ(alerter_->sequence(), 3u);
  // Kept while its resolution is undelivered, dropped once delivered and old.
  Eval(t0 + 900);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  alerter_->MarkResolutionDelivered({a.fingerprint});
  Eval(t0 + 901);
  EXPECT_EQ(StateOf("search"), "");
}

// The rule clock may be event time, which a replay moves by days in
// seconds: how long a resolved alert stays listed (and re-sent) is measured
// on the wall clock, as Prometheus does, so readers and Alertmanager see it.
TEST_F(AlerterTest, ResolvedRetentionRunsOnTheWallClockWhateverTheRuleClock) {
  StartAlerter();
  const int64_t t0 = kDay + 3600;
  Clicks("search", 8, t0 - 30);
  Eval(t0);
  Eval(t0 + 120);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  const auto fingerprint = alerter_->Alerts().at(0).fingerprint;
  // Rule clock and wall clock apart from here, as in a replay on the
  // event-time clock: the rule clock (behind the wall clock, as it always
  // is) crosses days while the wall clock moves by seconds.
  int64_t wall_s = t0 + 10 * 86400;
  const auto eval_at = [&](int64_t rule_s, int64_t wall) {
    now_s_ = rule_s;
    query_clock_.SetMs(wall * 1000);
    ASSERT_TRUE(alerter_->EvaluateOnce().ok());
  };
  eval_at(t0 + 600, ++wall_s);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  alerter_->MarkResolutionDelivered({fingerprint});
  // Two days later on the rule clock, 2 s later on the wall: still listed.
  eval_at(t0 + 2 * 86400, wall_s + 2);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  // And after a restart, from what was persisted.
  StartAlerter();
  eval_at(t0 + 3 * 86400, wall_s + 30);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  // The retention (60 s here) passed on the wall clock: dropped.
  eval_at(t0 + 3 * 86400 + 1, wall_s + 61);
  EXPECT_EQ(StateOf("search"), "");
}

TEST_F(AlerterTest, RestartInEachStateNeitherDropsNorRefires) {
  const int64_t t0 = kDay + 3600;
  ASSERT_NO_FATAL_FAILURE(StartWithSearchPending(t0));
  // Restart while pending: `for` keeps counting from the first activation.
  StartAlerter();
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  Eval(t0 + 120);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  const auto firing = alerter_->Alerts()[0];
  // Restart while firing: same instance, same firing time, no new transition.
  store_.reset();
  alerter_.reset();
  OpenStore();
  StartAlerter();
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  EXPECT_EQ(alerter_->Alerts()[0].firing_since_ms, firing.firing_since_ms);
  EXPECT_EQ(alerter_->Alerts()[0].starts_at_ms, firing.starts_at_ms);
  EXPECT_EQ(alerter_->Alerts()[0].fingerprint, firing.fingerprint);
  const uint64_t seq = alerter_->sequence();
  EXPECT_EQ(seq, 2u);
  Eval(t0 + 180);
  EXPECT_EQ(alerter_->sequence(), seq);
  // Resolve, restart while resolved: the undelivered resolution is kept.
  Eval(t0 + 600);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  StartAlerter();
  auto recs = alerter_->Alerts();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].state, alerting::AlertState::kResolved);
  EXPECT_FALSE(recs[0].resolution_delivered);
  // The clock may restart behind the last evaluation (event time): no
  // evaluation until it has passed it.
  Eval(t0 + 500);
  EXPECT_EQ(alerter_->sequence(), 3u);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
}

TEST_F(AlerterTest, EventTimeClockBeforeTheFirstEventEvaluatesNothing) {
  StartAlerter();
  // An event-time clock reads 0 until an event arrives; the absence rule
  // must not fire at the epoch and calendar windows must not be queried.
  newest_product_ms_ = 0;
  Eval(0);
  EXPECT_TRUE(alerter_->Alerts().empty());
  EXPECT_EQ(alerter_->stats().evaluations, 0u);
  EXPECT_EQ(alerter_->stats().evaluation_failures, 0u);
}

TEST_F(AlerterTest, AbsenceFiresWhenAFamilyGoesQuiet) {
  StartAlerter();
  newest_product_ms_ = (kDay + 100) * 1000;
  Eval(kDay + 100 + 600);
  EXPECT_TRUE(alerter_->Alerts().empty());
  Eval(kDay + 100 + 601);
  auto alerts = alerter_->Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].rule, "Quiet");
  EXPECT_EQ(alerts[0].state, alerting::AlertState::kFiring);
  EXPECT_EQ(alerts[0].labels.at("family"), "product");
  newest_product_ms_ = (kDay + 700) * 1000;
  Eval(kDay + 702);
  EXPECT_EQ(alerter_->Alerts()[0].state, alerting::AlertState::kResolved);
}

TEST_F(AlerterTest, WhileNotReadyOnlyAgeRulesAreEvaluated) {
  const int64_t t0 = kDay + 3600;
  ASSERT_NO_FATAL_FAILURE(StartWithSearchPending(t0));
  // The engine stops being ready (say Kafka is unreachable; its partitions
  // are caught up) and product events stop: the KPI rule's instance is
  // frozen, not resolved, while the absence rule still fires.
  ready_ = false;
  newest_product_ms_ = t0 * 1000;
  Eval(t0 + 601);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  bool quiet_firing = false;
  for (const auto& a : alerter_->Alerts())
    quiet_firing |= a.rule == "Quiet" && a.state == alerting::AlertState::kFiring;
  EXPECT_TRUE(quiet_firing);
  // Ready again: the KPI rule follows what its condition was over the
  // time it was not evaluated (read back from the state): the clicks held
  // for its 2 minutes (it fired) and then left the 10m window (resolved).
  ready_ = true;
  Eval(t0 + 602);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  for (const auto& a : alerter_->Alerts()) {
    if (a.rule == "ManyClicks") {
      EXPECT_NEAR(a.firing_since_ms, (t0 + 120) * 1000, 1000);  // the first sample 2 minutes in
      EXPECT_LE(a.resolved_at_ms, (t0 + 602) * 1000);
    }
  }
}

TEST_F(AlerterTest, TransitionLogIsBoundedAndSurvivesRestart) {
  max_transitions_ = 4;
  StartAlerter();
  // Each round: pending, then resolved->pending? Use absence flapping with for 0.
  for (int i = 0; i < 5; ++i) {
    newest_product_ms_ = (kDay + i * 2000) * 1000;
    Eval(kDay + i * 2000 + 601);  // fires (absence has no `for`)
    newest_product_ms_ = (kDay + i * 2000 + 700) * 1000;
    Eval(kDay + i * 2000 + 702);  // resolves
  }
  EXPECT_EQ(alerter_->sequence(), 10u);
  std::vector<alerting::AlertTransition> ts;
  EXPECT_FALSE(alerter_->TransitionsAfter(2, 100, &ts));  // 3..6 were dropped
  ASSERT_TRUE(alerter_->TransitionsAfter(6, 100, &ts));
  ASSERT_EQ(ts.size(), 4u);
  EXPECT_EQ(ts.front().sequence, 7u);
  StartAlerter();
  ts.clear();
  ASSERT_TRUE(alerter_->TransitionsAfter(8, 100, &ts));
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts.back().sequence, 10u);
  EXPECT_EQ(alerter_->sequence(), 10u);
}

TEST_F(AlerterTest, GrpcListWatchAndResume) {
  StartAlerter();
  auto server = StartGrpc();
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::AlertService::NewStub(channel);

  const int64_t t0 = kDay + 3600;
  Clicks("search", 8, t0 - 30);
  Eval(t0);  // seq 1: pending
  // A watcher from 0 gets the backlog, then live transitions.
  grpc::ClientContext ctx;
  v1::WatchAlertsRequest req;
  auto reader = stub->WatchAlerts(&ctx, req);
  v1::AlertTransition t;
  ASSERT_TRUE(reader->Read(&t));
  EXPECT_EQ(t.sequence(), 1u);
  EXPECT_EQ(t.alert().state(), v1::ALERT_STATE_PENDING);
  Eval(t0 + 120);  // seq 2: firing, pushed to the waiting watcher
  ASSERT_TRUE(reader->Read(&t));
  EXPECT_EQ(t.sequence(), 2u);
  EXPECT_EQ(t.alert().state(), v1::ALERT_STATE_FIRING);
  ctx.TryCancel();
  reader->Finish().ok();

  // ListAlerts: the firing alert and the sequence to resume from.
  {
    grpc::ClientContext lctx;
    v1::ListAlertsResponse resp;
    ASSERT_TRUE(stub->ListAlerts(&lctx, v1::ListAlertsRequest(), &resp).ok());
    ASSERT_EQ(resp.alerts_size(), 1);
    EXPECT_EQ(resp.alerts(0).state(), v1::ALERT_STATE_FIRING);
    EXPECT_EQ(resp.sequence(), 2u);
  }
  // A client that reconnects resumes after what it saw: only seq 3.
  Eval(t0 + 600);  // seq 3: resolved
  grpc::ClientContext ctx2;
  req.set_after_sequence(2);
  auto reader2 = stub->WatchAlerts(&ctx2, req);
  ASSERT_TRUE(reader2->Read(&t));
  EXPECT_EQ(t.sequence(), 3u);
  EXPECT_EQ(t.from(), v1::ALERT_STATE_FIRING);
  EXPECT_EQ(t.alert().state(), v1::ALERT_STATE_RESOLVED);
  ctx2.TryCancel();
  reader2->Finish().ok();
  server->Shutdown();
}

TEST_F(AlerterTest, GrpcResumeFromTrimmedSequenceIsOutOfRange) {
  max_transitions_ = 2;
  StartAlerter();
  for (int i = 0; i < 3; ++i) {
    newest_product_ms_ = (kDay + i * 2000) * 1000;
    Eval(kDay + i * 2000 + 601);
    newest_product_ms_ = (kDay + i * 2000 + 700) * 1000;
    Eval(kDay + i * 2000 + 702);
  }
  auto server = StartGrpc();
  ASSERT_NE(server, nullptr);
  auto stub = v1::AlertService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::WatchAlertsRequest req;
  req.set_after_sequence(1);
  auto reader = stub->WatchAlerts(&ctx, req);
  v1::AlertTransition t;
  EXPECT_FALSE(reader->Read(&t));
  const auto st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_NE(st.error_message().find("ListAlerts"), std::string::npos);
  server->Shutdown();
}

// State written before 0.2 (kpistream.v1.AlertRecord under "i/") is
// migrated: the firing alert comes back with its group, times and identity.
TEST_F(AlerterTest, StateFromBeforeTheNewFormatIsMigrated) {
  internal::v1::LegacyAlertRecord old;
  auto* a = old.mutable_alert();
  a->set_rule("ManyClicks");
  a->set_state(3);  // firing
  a->set_value(8);
  a->mutable_active_since()->set_seconds(kDay);
  a->mutable_firing_since()->set_seconds(kDay + 120);
  a->mutable_last_true()->set_seconds(kDay + 120);
  a->mutable_last_evaluated()->set_seconds(kDay + 120);
  ASSERT_TRUE(store_
                  ->WriteAlerts({{std::string("i/ManyClicks\0channel=search", 27), old.SerializeAsString()},
                                 {std::string("t/\0\0\0\0\0\0\0\x07", 10), "x"}})
                  .ok());
  query_clock_.SetMs((kDay + 3600) * 1000);
  StartAlerter();
  const auto alerts = alerter_->Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].state, alerting::AlertState::kFiring);
  EXPECT_EQ(alerts[0].labels.at("channel"), "search");
  EXPECT_EQ(alerts[0].firing_since_ms, (kDay + 120) * 1000);
  EXPECT_EQ(alerts[0].starts_at_ms, (kDay + 120) * 1000);
  EXPECT_EQ(alerter_->sequence(), 7u);  // the old log's sequence goes on
  // The old keys are gone; a second start reads the new ones.
  int old_keys = 0;
  ASSERT_TRUE(store_->ScanAlerts("i/", [&](auto, auto) { ++old_keys; }).ok());
  ASSERT_TRUE(store_->ScanAlerts("t/", [&](auto, auto) { ++old_keys; }).ok());
  EXPECT_EQ(old_keys, 0);
  StartAlerter();
  ASSERT_EQ(alerter_->Alerts().size(), 1u);
  EXPECT_EQ(alerter_->Alerts()[0].fingerprint, alerts[0].fingerprint);
  EXPECT_EQ(alerter_->sequence(), 7u);
}

TEST(AlertmanagerPayloadTest, FiringAheadResolvedAtResolution) {
  alerting::Alert firing, resolved;
  firing.state = alerting::AlertState::kFiring;
  firing.labels["alertname"] = "A";
  firing.annotations["summary"] = "s";
  firing.starts_at_ms = 1000 * 1000;
  resolved.state = alerting::AlertState::kResolved;
  resolved.labels["alertname"] = "B";
  resolved.starts_at_ms = 1000 * 1000;
  resolved.ends_at_ms = 2000 * 1000;
  const auto body = alerting::AlertmanagerPayload({firing, resolved}, 3000 * 1000, 60 * 1000, "http://kpid");
  const auto j = nlohmann::json::parse(body);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["labels"]["alertname"], "A");
  EXPECT_EQ(j[0]["annotations"]["summary"], "s");
  EXPECT_EQ(j[0]["startsAt"], "1970-01-01T00:16:40.000Z");
  EXPECT_EQ(j[0]["endsAt"], "1970-01-01T00:51:00.000Z");  // now + 60 s
  EXPECT_EQ(j[0]["generatorURL"], "http://kpid");
  EXPECT_EQ(j[1]["endsAt"], "1970-01-01T00:33:20.000Z");  // the resolution time
  // Bytes that are not UTF-8 go out as U+FFFD (JSON cannot carry them).
  firing.labels["channel"] = std::string("north\xff\xfe", 7);
  const auto bad = nlohmann::json::parse(alerting::AlertmanagerPayload({firing}, 3000 * 1000, 60 * 1000, ""));
  EXPECT_EQ(bad[0]["labels"]["channel"], "north\xef\xbf\xbd\xef\xbf\xbd");
}

// Generic webhooks get Alertmanager's own webhook body, so receivers built
// for Alertmanager parse kpid's unchanged.
TEST(WebhookPayloadTest, IsAlertmanagersWebhookFormat) {
  alerting::Alert firing, resolved;
  firing.state = alerting::AlertState::kFiring;
  firing.labels = {{"alertname", "A"}, {"severity", "critical"}, {"team", "sales"}};
  firing.annotations = {{"summary", "a"}, {"runbook", "r"}};
  firing.starts_at_ms = 1000 * 1000;
  firing.fingerprint = "00aa";
  resolved.state = alerting::AlertState::kResolved;
  resolved.labels = {{"alertname", "B"}, {"severity", "critical"}};
  resolved.annotations = {{"summary", "b"}, {"runbook", "r"}};
  resolved.starts_at_ms = 1000 * 1000;
  resolved.ends_at_ms = 2000 * 1000;
  resolved.fingerprint = "00bb";
  auto j = nlohmann::json::parse(alerting::WebhookPayload({firing, resolved}, "kpid", "http://kpid:9464"));
  EXPECT_EQ(j["version"], "4");
  EXPECT_EQ(j["groupKey"], "{}:{}");
  EXPECT_EQ(j["truncatedAlerts"], 0);
  EXPECT_EQ(j["status"], "firing");  // one still fires
  EXPECT_EQ(j["receiver"], "kpid");
  EXPECT_EQ(j["groupLabels"], nlohmann::json::object());
  EXPECT_EQ(j["commonLabels"], (nlohmann::json{{"severity", "critical"}}));  // what every alert shares
  EXPECT_EQ(j["commonAnnotations"], (nlohmann::json{{"runbook", "r"}}));
  EXPECT_EQ(j["externalURL"], "http://kpid:9464");
  ASSERT_EQ(j["alerts"].size(), 2u);
  EXPECT_EQ(j["alerts"][0]["status"], "firing");
  EXPECT_EQ(j["alerts"][0]["labels"]["team"], "sales");
  EXPECT_EQ(j["alerts"][0]["startsAt"], "1970-01-01T00:16:40.000Z");
  EXPECT_EQ(j["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
  EXPECT_EQ(j["alerts"][0]["fingerprint"], "00aa");
  EXPECT_EQ(j["alerts"][1]["status"], "resolved");
  EXPECT_EQ(j["alerts"][1]["endsAt"], "1970-01-01T00:33:20.000Z");
  j = nlohmann::json::parse(alerting::WebhookPayload({resolved}, "kpid", ""));
  EXPECT_EQ(j["status"], "resolved");
  EXPECT_EQ(j["commonLabels"]["alertname"], "B");
}

// Issue 14, item 5: `for` is never met across a gap the alerter did not
// evaluate. The issue's case: event-time clock, evaluation every second, a
// rule over 10 minutes `> 0` for 30 minutes; one click at 00:00:30 (pending),
// the next at 05:00:30. The condition was false from 00:10:30 on: a new
// pending period starts at 05:00:30, it does not fire at once.
TEST_F(AlerterTest, ForIsNeverMetAcrossAGapTheAlerterDidNotEvaluate) {
  auto cat = kpi::ParseCatalog(R"yaml(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
kpis:
  clicks: {formula: clicks, unit: count, windows: [10m]}
alerts:
  Any: {kpi: clicks, window: 10m, condition: "> 0", for: 30m}
  AtOnce: {kpi: clicks, window: 10m, condition: "> 0", for: 0s}
  AtOnceToo: {kpi: clicks, window: 10m, condition: "> 0", for: 0}
)yaml",
                               "t.yaml");
  ASSERT_TRUE(cat.ok()) << cat.status();  // `for: 0` and `for: 0s` are accepted
  alerter_.reset();
  ingest_.reset();
  queries_.reset();
  source_.reset();
  store_.reset();
  std::filesystem::remove_all(dir_);
  catalog_ = std::move(*cat);
  OpenStore();
  AlerterOptions o;
  o.now_ms = [this] { return now_s_ * 1000; };  // the event-time clock of the issue
  o.eval_interval_ms = 1000;
  auto a = Alerter::Create(o, catalog_, *queries_, store_.get(), {}, query_clock_);
  ASSERT_TRUE(a.ok()) << a.status();
  alerter_ = std::move(*a);
  auto state_of = [&](const std::string& rule) {
    for (const auto& x : alerter_->Alerts()) {
      if (x.rule == rule) return x.state;
    }
    return alerting::AlertState::kInactive;
  };
  const int64_t t0 = 1763596830;  // 2025-11-20T00:00:30Z
  Clicks("search", 1, t0);
  Eval(t0);
  EXPECT_EQ(state_of("Any"), alerting::AlertState::kPending);
  EXPECT_EQ(state_of("AtOnce"), alerting::AlertState::kFiring);
  EXPECT_EQ(state_of("AtOnceToo"), alerting::AlertState::kFiring);
  Clicks("search", 1, t0 + 5 * 3600);
  Eval(t0 + 5 * 3600);
  ASSERT_EQ(state_of("Any"), alerting::AlertState::kPending);
  for (const auto& x : alerter_->Alerts()) {
    if (x.rule == "Any") {
      EXPECT_EQ(x.active_since_ms, (t0 + 5 * 3600) * 1000);  // a new pending period
    }
  }
  // Clicks every 5 minutes from there, evaluated every 30 s: it fires 30
  // minutes after 05:00:30, not before.
  const int64_t t1 = t0 + 5 * 3600;
  for (int64_t s = 30; s <= 31 * 60; s += 30) {
    if (s % 300 == 0) Clicks("search", 1, t1 + s);
    Eval(t1 + s);
    EXPECT_EQ(state_of("Any"), s < 30 * 60 ? alerting::AlertState::kPending : alerting::AlertState::kFiring) << s;
  }
  EXPECT_GE(alerter_->stats().gaps_sampled, 1u);
  // The skipped time was evaluated: pending at 00:00:30, cleared once the
  // click left the window, pending again at 05:00:30.
  std::vector<alerting::AlertTransition> ts;
  ASSERT_TRUE(alerter_->TransitionsAfter(0, 1000, &ts));
  std::vector<std::pair<alerting::AlertState, int64_t>> any;
  for (const auto& x : ts) {
    if (x.alert.rule == "Any") any.emplace_back(x.alert.state, x.alert.last_evaluated_ms / 1000);
  }
  ASSERT_GE(any.size(), 3u);
  EXPECT_EQ(any[0], std::make_pair(alerting::AlertState::kPending, t0));
  EXPECT_EQ(any[1].first, alerting::AlertState::kInactive);
  EXPECT_GT(any[1].second, t0 + 600);
  EXPECT_LT(any[1].second, t0 + 600 + 5 * 3600 / 60 + 1);  // found by the first sample after 00:10:30
  EXPECT_EQ(any[2], std::make_pair(alerting::AlertState::kPending, t1));
}

TEST(StepAlertTest, AGapCountsNeitherAsHeldNorAsCleared) {
  kpi::AlertRule r;
  r.for_s = 600;
  r.keep_firing_for_s = 300;
  alerting::AlertInstance in;
  const int64_t s = 1000;
  StepAlert(r, true, 1.0, 0, 0, &in);
  StepAlert(r, true, 1.0, 240 * s, 0, &in);
  EXPECT_EQ(in.state, alerting::AlertState::kPending);
  // A gap of an hour, true again after it: the 4 minutes before count, the
  // hour does not.
  StepAlert(r, true, 1.0, 3840 * s, 3600 * s, &in);
  EXPECT_EQ(in.state, alerting::AlertState::kPending);
  EXPECT_EQ(in.active_since_ms, 3600 * s);
  StepAlert(r, true, 1.0, 4200 * s, 0, &in);  // 4 + 6 minutes of known truth: fires
  EXPECT_EQ(in.state, alerting::AlertState::kFiring);
  // Firing, true at 4200, a gap of an hour, false after it: keep_firing_for
  // counts from the end of the gap, not from before it.
  StepAlert(r, false, 0.0, 7800 * s, 3600 * s, &in);
  EXPECT_EQ(in.state, alerting::AlertState::kFiring);
  StepAlert(r, false, 0.0, 8100 * s, 0, &in);
  EXPECT_EQ(in.state, alerting::AlertState::kResolved);
}

// Issue 14, item 6: nothing changes state from data being replayed. While
// partitions replay, KPI rules and absence rules alike are held; the same
// data once caught up is evaluated.
TEST_F(AlerterTest, NothingChangesStateWhileReplaying) {
  const int64_t t0 = kDay + 3600;
  StartAlerter();
  Clicks("search", 8, t0 - 30);
  replaying_ = true;
  newest_product_ms_ = (t0 - 7200) * 1000;  // a replay's view: product events two hours old
  Eval(t0);
  EXPECT_TRUE(alerter_->Alerts().empty());
  EXPECT_EQ(alerter_->sequence(), 0u);
  replaying_ = false;
  newest_product_ms_ = -1;  // caught up: product events are current
  Eval(t0 + 1);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  for (const auto& a : alerter_->Alerts()) EXPECT_NE(a.rule, "Quiet");
}

// Issue 14, item 7: startsAt is the firing time on the wall clock, the same
// on every resend and after a restart, for both clocks.
TEST_F(AlerterTest, StartsAtIsFixedWhenTheAlertFires) {
  const int64_t t0 = kDay + 3600;
  ASSERT_NO_FATAL_FAILURE(StartWithSearchPending(t0));
  Eval(t0 + 120);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  const int64_t starts_at = alerter_->Alerts()[0].starts_at_ms;
  EXPECT_EQ(starts_at, (t0 + 120) * 1000);
  for (int i = 1; i <= 4; ++i) {
    Eval(t0 + 120 + 10 * i);
    const auto body = alerting::AlertmanagerPayload(alerter_->Alerts(), (t0 + 120 + 10 * i) * 1000, 60000, "");
    EXPECT_EQ(nlohmann::json::parse(body)[0]["startsAt"], "2025-11-23T01:02:00.000Z");
  }
  StartAlerter();
  EXPECT_EQ(alerter_->Alerts()[0].starts_at_ms, starts_at);
}

// Issue 14, item 8: any byte a dimension value can hold survives a restart
// in the alert's labels and identity.
TEST_F(AlerterTest, LabelBytesAndIdentitySurviveRestart) {
  const int64_t t0 = kDay + 3600;
  StartAlerter();
  const std::vector<std::string> values = {std::string("north\0team=growth", 17), "a=b,c", "line\nbreak",
                                           std::string("bad\xff\xfe", 5), std::string("\0", 1)};
  for (const auto& v : values) {
    if (v.find('\xff') != std::string::npos) {
      ClicksDirect(v, 8, t0 - 30);
    } else {
      Clicks(v, 8, t0 - 30);
    }
  }
  Eval(t0);
  auto before = alerter_->Alerts();
  ASSERT_EQ(before.size(), values.size());
  std::set<std::string> fingerprints;
  for (const auto& a : before) fingerprints.insert(a.fingerprint);
  EXPECT_EQ(fingerprints.size(), values.size());
  store_.reset();
  alerter_.reset();
  OpenStore();
  StartAlerter();
  auto after = alerter_->Alerts();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].labels, before[i].labels);
    EXPECT_EQ(after[i].fingerprint, before[i].fingerprint);
    EXPECT_EQ(after[i].labels.at("team"), "ads");  // the rule's label; no value spilled into another
  }
  std::set<std::string> channels;
  for (const auto& a : after) channels.insert(a.labels.at("channel"));
  EXPECT_EQ(channels, std::set<std::string>(values.begin(), values.end()));
  // Another evaluation finds the same instances: no new transitions.
  const uint64_t seq = alerter_->sequence();
  Eval(t0 + 60);
  EXPECT_EQ(alerter_->sequence(), seq);
}

TEST_F(AlerterTest, GrpcResumeFromTheFutureIsOutOfRange) {
  StartAlerter();
  Clicks("search", 8, kDay + 3600 - 30);
  Eval(kDay + 3600);  // seq 1
  auto server = StartGrpc();
  ASSERT_NE(server, nullptr);
  auto stub = v1::AlertService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::WatchAlertsRequest req;
  req.set_after_sequence(5);  // a sequence this server never issued (another replica's, an old state dir)
  auto reader = stub->WatchAlerts(&ctx, req);
  v1::AlertTransition t;
  EXPECT_FALSE(reader->Read(&t));
  const auto st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE) << st.error_message();
  server->Shutdown();
}

TEST_F(AlerterTest, StoppingTheAlerterEndsWatchersWithUnavailable) {
  StartAlerter();
  auto server = StartGrpc();
  ASSERT_NE(server, nullptr);
  auto stub = v1::AlertService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto reader = stub->WatchAlerts(&ctx, v1::WatchAlertsRequest());
  // Wait until the watch is registered: a transition reaches it.
  Clicks("search", 8, kDay + 3600 - 30);
  Eval(kDay + 3600);
  v1::AlertTransition t;
  ASSERT_TRUE(reader->Read(&t));
  alerter_->Stop();
  EXPECT_FALSE(reader->Read(&t));
  const auto st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  server->Shutdown();
}

}  // namespace
}  // namespace kpistream::services

namespace kpistream::services {
namespace {

// Replicas (services/alert_leader.h): the leader replicates every write of
// its state before its own store takes it; a follower holds what it
// replicated, evaluates nothing, and lists the same alerts; a leader whose
// replication fails (fenced) keeps nothing of that round.
TEST_F(AlerterTest, OnlyTheLeaderEvaluatesAndTheFollowerListsItsReplicatedState) {
  std::vector<state::Store::AlertWrite> topic;  // stands for <group>.__alerts.changelog
  bool fenced = false;
  // What a reader saw while the fenced round was being replicated.
  std::optional<uint64_t> seen_sequence;
  std::vector<alerting::Alert> seen_alerts;
  std::vector<alerting::AlertTransition> seen_transitions;
  auto make = [&](state::Store* store, bool leads) {
    AlerterOptions o;
    o.now_ms = [this] { return now_s_ * 1000; };
    o.eval_interval_ms = 60000;
    AlertSources src;
    src.caught_up = [] { return true; };
    src.replaying = [] { return false; };
    src.newest_event_ms = [this](std::optional<kpi::Family>) { return now_s_ * 1000; };
    src.active = [leads] { return leads; };
    if (leads) {
      src.replicate = [&, store](const std::vector<state::Store::AlertWrite>& w) {
        if (fenced) {
          seen_sequence = alerter_->sequence();
          seen_alerts = alerter_->Alerts();
          EXPECT_TRUE(alerter_->TransitionsAfter(0, 100, &seen_transitions));
          return absl::FailedPreconditionError("fenced by a newer alert leader");
        }
        topic.insert(topic.end(), w.begin(), w.end());
        return store->WriteAlerts(w);
      };
    }
    auto a = Alerter::Create(o, catalog_, *queries_, store, src, query_clock_);
    EXPECT_TRUE(a.ok()) << a.status();
    return std::move(*a);
  };
  alerter_ = make(store_.get(), true);
  const auto follower_dir = dir_.string() + "-follower";
  std::filesystem::remove_all(follower_dir);
  auto follower_store = *state::Store::Open({.path = follower_dir});
  auto follower = make(follower_store.get(), false);

  const int64_t t0 = kDay + 3600;
  Clicks("search", 8, t0 - 30);
  Eval(t0);
  Eval(t0 + 120);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  ASSERT_FALSE(topic.empty());
  // The follower evaluates nothing of its own...
  ASSERT_TRUE(follower->EvaluateOnce().ok());
  EXPECT_EQ(follower->stats().evaluations, 0u);
  EXPECT_TRUE(follower->Alerts().empty());
  // ...and lists the leader's alerts once it applied what was replicated.
  ASSERT_TRUE(follower_store->WriteAlerts(topic).ok());
  ASSERT_TRUE(follower->Reload().ok());
  const auto mine = alerter_->Alerts();
  const auto theirs = follower->Alerts();
  ASSERT_EQ(theirs.size(), 1u);
  EXPECT_EQ(theirs[0].fingerprint, mine[0].fingerprint);
  EXPECT_EQ(theirs[0].state, alerting::AlertState::kFiring);
  EXPECT_EQ(theirs[0].firing_since_ms, mine[0].firing_since_ms);
  EXPECT_EQ(follower->sequence(), alerter_->sequence());

  // Fenced: the round that would resolve the alert is discarded whole, and
  // the leader's in-memory state is its stored one again.
  const auto seq = alerter_->sequence();
  fenced = true;
  now_s_ = t0 + 600;
  query_clock_.SetMs(now_s_ * 1000);
  EXPECT_FALSE(alerter_->EvaluateOnce().ok());
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_FIRING");
  EXPECT_EQ(alerter_->sequence(), seq);
  EXPECT_EQ(alerter_->stats().persist_failures, 1u);
  // Nor did any reader see that round while it was being replicated: its
  // sequence numbers are given out again.
  ASSERT_TRUE(seen_sequence.has_value());
  EXPECT_EQ(*seen_sequence, seq);
  ASSERT_EQ(seen_alerts.size(), 1u);
  EXPECT_EQ(seen_alerts[0].state, alerting::AlertState::kFiring);
  ASSERT_FALSE(seen_transitions.empty());
  EXPECT_EQ(seen_transitions.back().sequence, seq);
  follower.reset();
  follower_store.reset();
  std::filesystem::remove_all(follower_dir);
}

// An answer that lacks partitions (a rebalance, a replica gone) changes no
// alert: the rule is held until the answer is whole again.
TEST_F(AlerterTest, AnAnswerWithMissingPartitionsHoldsTheRule) {
  bool whole = true;
  source_ = std::make_unique<query::LocalPartialSource>(
      *store_,
      [&] {
        query::Ownership o;
        o.sources = {state::SourceId(1, 0)};
        o.names = {"clicks[0]"};
        if (!whole) o.missing = {"clicks[1]"};
        return o;
      },
      [&] { return whole ? uint64_t{0} : uint64_t{1}; });
  queries_ = std::make_unique<query::QueryService>(catalog_, ids_, *source_, query_clock_,
                                                   query::QueryOptions{.retention = {}});
  StartAlerter();
  const int64_t t0 = kDay + 3600;
  Clicks("search", 8, t0 - 30);
  Eval(t0);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  whole = false;
  Eval(t0 + 600);  // the clicks left the window, but the answer is partial
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  EXPECT_GT(alerter_->stats().evaluation_failures, 0u);
  whole = true;
  Eval(t0 + 660);
  EXPECT_NE(StateOf("search"), "ALERT_STATE_PENDING");  // judged again
}

}  // namespace
}  // namespace kpistream::services
