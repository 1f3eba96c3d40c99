// The alert evaluator on a real RocksDB store with a fake clock: rules over
// real partials, instances per group, restart in each state, the transition
// log, and the gRPC AlertService (list, watch, resume) over a real server.
#include "services/alerter.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "ingest/local_ingest.h"
#include "kpistream/events/v1/events.pb.h"
#include "kpistream/v1/alerts.grpc.pb.h"
#include "services/grpc_server.h"
#include "services/notifier.h"

namespace kpistream::services {
namespace {

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
    o.resolved_retention_ms = 60 * 1000;
    o.max_transitions = max_transitions_;
    AlertSources src;
    src.ready = [this] { return ready_; };
    src.newest_event_ms = [this](std::optional<kpi::Family> f) {
      // Product events keep arriving unless a test says otherwise.
      if (f != kpi::Family::kProduct) return int64_t{0};
      return newest_product_ms_ < 0 ? now_s_ * 1000 : newest_product_ms_;
    };
    auto a = Alerter::Create(o, catalog_, *queries_, store_.get(), src);
    ASSERT_TRUE(a.ok()) << a.status();
    alerter_ = std::move(*a);
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
      if (a.rule() == "ManyClicks" && a.labels().at("channel") == channel) {
        return std::string(v1::AlertState_Name(a.state()));
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
  size_t max_transitions_ = 10000;
  int clicks_ = 0;
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
  EXPECT_EQ(a.labels().at("alertname"), "ManyClicks");
  EXPECT_EQ(a.labels().at("severity"), "critical");
  EXPECT_EQ(a.labels().at("team"), "ads");
  EXPECT_EQ(a.labels().at("kpi"), "clicks");
  EXPECT_EQ(a.annotations().at("summary"), "8 clicks on search (over 5)");
  EXPECT_EQ(a.value(), 8);
  EXPECT_EQ(a.firing_since().seconds(), t0 + 120);
  // The clicks leave the 10-minute window: resolved.
  Eval(t0 + 600);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  // Transitions: pending, firing, resolved, with increasing sequences.
  std::vector<v1::AlertTransition> ts;
  ASSERT_TRUE(alerter_->TransitionsAfter(0, 100, &ts));
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_EQ(ts[0].from(), v1::ALERT_STATE_INACTIVE);
  EXPECT_EQ(ts[1].alert().state(), v1::ALERT_STATE_FIRING);
  EXPECT_EQ(ts[2].alert().state(), v1::ALERT_STATE_RESOLVED);
  EXPECT_EQ(ts[2].sequence(), 3u);
  EXPECT_EQ(alerter_->sequence(), 3u);
  // Kept while its resolution is undelivered, dropped once delivered and old.
  Eval(t0 + 900);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  alerter_->MarkResolutionDelivered({a.fingerprint()});
  Eval(t0 + 901);
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
  EXPECT_EQ(alerter_->Alerts()[0].firing_since().seconds(), firing.firing_since().seconds());
  EXPECT_EQ(alerter_->Alerts()[0].fingerprint(), firing.fingerprint());
  const uint64_t seq = alerter_->sequence();
  EXPECT_EQ(seq, 2u);
  Eval(t0 + 180);
  EXPECT_EQ(alerter_->sequence(), seq);
  // Resolve, restart while resolved: the undelivered resolution is kept.
  Eval(t0 + 600);
  ASSERT_EQ(StateOf("search"), "ALERT_STATE_RESOLVED");
  StartAlerter();
  auto recs = alerter_->Records();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].alert().state(), v1::ALERT_STATE_RESOLVED);
  EXPECT_FALSE(recs[0].resolution_delivered());
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
  EXPECT_EQ(alerts[0].rule(), "Quiet");
  EXPECT_EQ(alerts[0].state(), v1::ALERT_STATE_FIRING);
  EXPECT_EQ(alerts[0].labels().at("family"), "product");
  newest_product_ms_ = (kDay + 700) * 1000;
  Eval(kDay + 702);
  EXPECT_EQ(alerter_->Alerts()[0].state(), v1::ALERT_STATE_RESOLVED);
}

TEST_F(AlerterTest, WhileNotReadyOnlyAgeRulesAreEvaluated) {
  const int64_t t0 = kDay + 3600;
  ASSERT_NO_FATAL_FAILURE(StartWithSearchPending(t0));
  // The engine stops being ready (say Kafka is unreachable) and product
  // events stop: the KPI rule's instance is frozen, not resolved, while the
  // absence rule still fires.
  ready_ = false;
  newest_product_ms_ = t0 * 1000;
  Eval(t0 + 601);
  EXPECT_EQ(StateOf("search"), "ALERT_STATE_PENDING");
  bool quiet_firing = false;
  for (const auto& a : alerter_->Alerts()) quiet_firing |= a.rule() == "Quiet" && a.state() == v1::ALERT_STATE_FIRING;
  EXPECT_TRUE(quiet_firing);
  // Ready again: the KPI rule moves on (the clicks left the 10m window).
  ready_ = true;
  Eval(t0 + 602);
  EXPECT_EQ(StateOf("search"), "");  // pending that cleared: inactive, dropped
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
  std::vector<v1::AlertTransition> ts;
  EXPECT_FALSE(alerter_->TransitionsAfter(2, 100, &ts));  // 3..6 were dropped
  ASSERT_TRUE(alerter_->TransitionsAfter(6, 100, &ts));
  ASSERT_EQ(ts.size(), 4u);
  EXPECT_EQ(ts.front().sequence(), 7u);
  StartAlerter();
  ts.clear();
  ASSERT_TRUE(alerter_->TransitionsAfter(8, 100, &ts));
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts.back().sequence(), 10u);
  EXPECT_EQ(alerter_->sequence(), 10u);
}

TEST_F(AlerterTest, GrpcListWatchAndResume) {
  StartAlerter();
  auto server =
      GrpcServer::Start({.listen = "127.0.0.1:0", .alerter = alerter_.get()}, catalog_, *queries_, query_clock_);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
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
  (*server)->Shutdown();
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
  auto server =
      GrpcServer::Start({.listen = "127.0.0.1:0", .alerter = alerter_.get()}, catalog_, *queries_, query_clock_);
  ASSERT_TRUE(server.ok());
  auto stub = v1::AlertService::NewStub(grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::WatchAlertsRequest req;
  req.set_after_sequence(1);
  auto reader = stub->WatchAlerts(&ctx, req);
  v1::AlertTransition t;
  EXPECT_FALSE(reader->Read(&t));
  const auto st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_NE(st.error_message().find("ListAlerts"), std::string::npos);
  (*server)->Shutdown();
}

TEST(AlertmanagerPayloadTest, FiringAheadResolvedAtResolution) {
  v1::AlertRecord firing, resolved;
  firing.mutable_alert()->set_state(v1::ALERT_STATE_FIRING);
  (*firing.mutable_alert()->mutable_labels())["alertname"] = "A";
  (*firing.mutable_alert()->mutable_annotations())["summary"] = "s";
  firing.mutable_alert()->mutable_firing_since()->set_seconds(1000);
  resolved.mutable_alert()->set_state(v1::ALERT_STATE_RESOLVED);
  (*resolved.mutable_alert()->mutable_labels())["alertname"] = "B";
  resolved.mutable_alert()->mutable_firing_since()->set_seconds(1000);
  resolved.mutable_alert()->mutable_resolved_at()->set_seconds(2000);
  const auto body = AlertmanagerPayload({firing, resolved}, 3000 * 1000, 60 * 1000, "http://kpid");
  const auto j = nlohmann::json::parse(body);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["labels"]["alertname"], "A");
  EXPECT_EQ(j[0]["annotations"]["summary"], "s");
  EXPECT_EQ(j[0]["startsAt"], "1970-01-01T00:16:40.000Z");
  EXPECT_EQ(j[0]["endsAt"], "1970-01-01T00:51:00.000Z");  // now + 60 s
  EXPECT_EQ(j[0]["generatorURL"], "http://kpid");
  EXPECT_EQ(j[1]["endsAt"], "1970-01-01T00:33:20.000Z");  // the resolution time
}

}  // namespace
}  // namespace kpistream::services
