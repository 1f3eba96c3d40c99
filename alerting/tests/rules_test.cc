#include "alerting/rules.h"
#include "kpi/alert_template.h"

#include <gtest/gtest.h>

namespace kpistream::alerting {
namespace {

constexpr int64_t kS = 1000;  // ms per second on the fake clock

kpi::AlertRule Rule(int64_t for_s, int64_t keep_s = 0) {
  kpi::AlertRule r;
  r.name = "R";
  r.for_s = for_s;
  r.keep_firing_for_s = keep_s;
  return r;
}

// Runs a sequence of (time s, condition) evaluations; returns the states.
std::vector<AlertState> Steps(const kpi::AlertRule& r, AlertInstance* in, std::vector<std::pair<int64_t, bool>> steps) {
  std::vector<AlertState> out;
  for (auto [t, active] : steps) {
    StepAlert(r, active, 1.0, t * kS, 0, in);
    out.push_back(in->state);
  }
  return out;
}

using S = AlertState;

TEST(AlertStateMachineTest, PendingThenFiringAfterFor) {
  AlertInstance in;
  const auto r = Rule(60);
  EXPECT_EQ(StepAlert(r, true, 5.0, 100 * kS, 0, &in), S::kInactive);
  EXPECT_EQ(in.state, S::kPending);
  EXPECT_EQ(in.active_since_ms, 100 * kS);
  EXPECT_FALSE(StepAlert(r, true, 5.0, 159 * kS, 0, &in));  // 59 s: still pending
  EXPECT_EQ(StepAlert(r, true, 6.0, 160 * kS, 0, &in), S::kPending);
  EXPECT_EQ(in.state, S::kFiring);
  EXPECT_EQ(in.firing_since_ms, 160 * kS);
  EXPECT_EQ(in.value, 6.0);
  EXPECT_EQ(StepAlert(r, false, 1.0, 170 * kS, 0, &in), S::kFiring);
  EXPECT_EQ(in.state, S::kResolved);
  EXPECT_EQ(in.resolved_at_ms, 170 * kS);
}

TEST(AlertStateMachineTest, ZeroForFiresAtOnce) {
  AlertInstance in;
  EXPECT_EQ(StepAlert(Rule(0), true, 1.0, 5 * kS, 0, &in), S::kInactive);
  EXPECT_EQ(in.state, S::kFiring);
}

TEST(AlertStateMachineTest, PendingClearsWithoutFiring) {
  AlertInstance in;
  EXPECT_EQ(Steps(Rule(60), &in, {{0, true}, {30, false}}), (std::vector<S>{S::kPending, S::kInactive}));
}

TEST(AlertStateMachineTest, FlappingNeverFiresUnderFor) {
  AlertInstance in;
  std::vector<std::pair<int64_t, bool>> steps;
  for (int i = 0; i < 20; ++i) steps.push_back({i * 40, i % 2 == 0});  // true 40 s, false 40 s, ...
  for (auto s : Steps(Rule(60), &in, steps)) EXPECT_NE(s, S::kFiring);
}

TEST(AlertStateMachineTest, KeepFiringForBridgesFlaps) {
  AlertInstance in;
  const auto r = Rule(0, 120);
  EXPECT_EQ(
      Steps(r, &in, {{0, true}, {60, false}, {119, false}, {120, true}, {200, false}, {239, false}, {240, false}}),
      (std::vector<S>{S::kFiring, S::kFiring, S::kFiring, S::kFiring, S::kFiring, S::kFiring, S::kResolved}));
  EXPECT_EQ(in.firing_since_ms, 0);  // one episode all along
  EXPECT_EQ(in.resolved_at_ms, 240 * kS);
}

TEST(AlertStateMachineTest, ResolvedStartsANewEpisode) {
  AlertInstance in;
  const auto r = Rule(10);
  Steps(r, &in, {{0, true}, {10, true}, {20, false}});
  ASSERT_EQ(in.state, S::kResolved);
  EXPECT_EQ(StepAlert(r, true, 1.0, 30 * kS, 0, &in), S::kResolved);
  EXPECT_EQ(in.state, S::kPending);
  EXPECT_EQ(in.active_since_ms, 30 * kS);
  EXPECT_EQ(in.firing_since_ms, 0);
  EXPECT_EQ(in.resolved_at_ms, 0);
}

TEST(AlertStateMachineTest, RestoredStateContinuesWhereItStopped) {
  // A restart restores the instance fields; the machine continues from them.
  const auto r = Rule(60, 30);
  AlertInstance pending{.state = S::kPending, .active_since_ms = 100 * kS, .last_true_ms = 130 * kS};
  EXPECT_EQ(StepAlert(r, true, 1.0, 160 * kS, 0, &pending), S::kPending);  // `for` counted across the restart
  AlertInstance firing{.state = S::kFiring, .active_since_ms = 0, .firing_since_ms = 60 * kS, .last_true_ms = 90 * kS};
  EXPECT_FALSE(StepAlert(r, true, 1.0, 200 * kS, 0, &firing));  // no new firing transition
  EXPECT_EQ(firing.firing_since_ms, 60 * kS);
  EXPECT_FALSE(StepAlert(r, false, 1.0, 229 * kS, 0, &firing));  // keep_firing_for from the last true
  EXPECT_EQ(StepAlert(r, false, 1.0, 230 * kS, 0, &firing), S::kFiring);
  AlertInstance resolved{.state = S::kResolved, .resolved_at_ms = 10 * kS};
  EXPECT_FALSE(StepAlert(r, false, 1.0, 20 * kS, 0, &resolved));
}

TEST(AlertConditionTest, ThresholdAndTargetBands) {
  kpi::KpiDef kpi;
  kpi.target = kpi::Target{.higher_is_better = true, .excellent = 70, .good = 50, .warning = 45};
  kpi::AlertRule r;
  r.op = kpi::CompareOp::kLt;
  r.threshold = 45;
  EXPECT_TRUE(EvalThreshold(r, kpi, 44.9).active);
  EXPECT_FALSE(EvalThreshold(r, kpi, 45).active);
  EXPECT_FALSE(EvalThreshold(r, kpi, std::nullopt).active);  // no data never fires
  r.target_band = kpi::Band::kWarning;                       // warning or worse: below good
  EXPECT_TRUE(EvalThreshold(r, kpi, 49).active);
  EXPECT_FALSE(EvalThreshold(r, kpi, 50).active);
  r.target_band = kpi::Band::kCritical;  // below warning
  EXPECT_FALSE(EvalThreshold(r, kpi, 46).active);
  EXPECT_TRUE(EvalThreshold(r, kpi, 44).active);
}

TEST(AlertConditionTest, RelativeChange) {
  kpi::AlertRule r;
  r.op = kpi::CompareOp::kLt;
  r.threshold = -0.2;
  auto c = EvalChange(r, 3.0, 4.0);  // -25 %
  EXPECT_TRUE(c.active);
  EXPECT_DOUBLE_EQ(*c.value, -0.25);
  EXPECT_EQ(c.baseline, 4.0);
  EXPECT_FALSE(EvalChange(r, 3.5, 4.0).active);  // -12.5 %
  EXPECT_FALSE(EvalChange(r, 3.0, 0.0).value);   // no base, no value
  EXPECT_FALSE(EvalChange(r, 3.0, std::nullopt).active);
  EXPECT_TRUE(EvalChange(r, -5.0, -2.0).active);  // relative to |before|
}

TEST(AlertConditionTest, RobustAnomaly) {
  kpi::AlertRule r;
  r.k = 3;
  const std::vector<double> hist = {100, 104, 98, 101, 500};  // one outlier week does not widen the band
  auto c = EvalAnomaly(r, 60, hist);
  EXPECT_TRUE(c.active);
  EXPECT_EQ(c.baseline, 101);
  EXPECT_FALSE(EvalAnomaly(r, 103, hist).active);
  r.direction = 1;  // only upward anomalies
  EXPECT_FALSE(EvalAnomaly(r, 60, hist).active);
  EXPECT_TRUE(EvalAnomaly(r, 140, hist).active);
  r.direction = 0;
  r.min_delta = 50;  // too small to matter
  EXPECT_FALSE(EvalAnomaly(r, 60, hist).active);
  EXPECT_FALSE(EvalAnomaly(r, 60, {100}).active);  // one point is no baseline
  // A flat history: the spread floor is 1 % of the level.
  r.min_delta = 0;
  EXPECT_FALSE(EvalAnomaly(r, 102, {100, 100, 100}).active);
  EXPECT_TRUE(EvalAnomaly(r, 104, {100, 100, 100}).active);
}

TEST(AlertConditionTest, Age) {
  kpi::AlertRule r;
  r.max_age_s = 300;
  EXPECT_FALSE(EvalAge(r, 300).active);
  EXPECT_TRUE(EvalAge(r, 301).active);
}

TEST(AlertTemplateTest, ExpandsAndRejectsUnknownPlaceholders) {
  kpi::TemplateData d{.value = 4.56789, .threshold = 4, .kpi = "churn", .window = "30d", .severity = "critical"};
  d.labels["plan"] = "pro";
  EXPECT_EQ(
      kpi::ExpandAlertTemplate("{{ $kpi }} {{$value}}% > {{ $threshold }} on {{ $labels.plan }} ({{ $window }})", d),
      "churn 4.568% > 4 on pro (30d)");
  EXPECT_EQ(kpi::ExpandAlertTemplate("{{ $baseline }}", d), "n/a");
  EXPECT_TRUE(kpi::CheckAlertTemplate("plain text").ok());
  EXPECT_FALSE(kpi::CheckAlertTemplate("{{ $valu }}").ok());
  EXPECT_FALSE(kpi::CheckAlertTemplate("{{ $value ").ok());
}

TEST(AlertTemplateTest, FingerprintDependsOnEveryLabel) {
  const std::map<std::string, std::string> a = {{"alertname", "X"}, {"plan", "pro"}};
  auto b = a;
  b["plan"] = "free";
  EXPECT_EQ(AlertFingerprint(a), AlertFingerprint(a));
  EXPECT_NE(AlertFingerprint(a), AlertFingerprint(b));
  EXPECT_EQ(AlertFingerprint(a).size(), 16u);
}

constexpr const char* kBase = R"(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
  imps: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}
kpis:
  ctr: {formula: clicks / imps * 100, unit: percent, windows: [1h], target: {direction: higher, good: 2, warning: 1}}
)";

absl::StatusOr<kpi::Catalog> WithAlerts(const std::string& alerts) {
  return kpi::ParseCatalog(kBase + alerts, "t.yaml");
}

TEST(AlertCatalogTest, ParsesEveryKind) {
  auto cat = WithAlerts(R"(
alerts:
  Low: {kpi: ctr, condition: "< 1.5", for: 10m, keep_firing_for: 5m, severity: critical, group_by: channel,
        labels: {team: ads}, annotations: {summary: "CTR {{ $value }}% on {{ $labels.channel }}"}}
  Band: {kpi: ctr, target: warning}
  Drop: {kpi: ctr, window: 24h, change: {compare_to: 7d, condition: "<= -20%"}}
  Odd: {kpi: ctr, anomaly: {period: 1d, periods: 7, k: 2.5, direction: down}}
  Quiet: {absence: {family: campaign, for: 10m}}
  Stale: {freshness: {max: 5m}, severity: info}
)");
  ASSERT_TRUE(cat.ok()) << cat.status();
  ASSERT_EQ(cat->alerts.size(), 6u);
  const auto& low = cat->alerts[0];
  EXPECT_EQ(low.kind, kpi::AlertKind::kThreshold);
  EXPECT_EQ(low.op, kpi::CompareOp::kLt);
  EXPECT_EQ(low.threshold, 1.5);
  EXPECT_EQ(low.window, "1h");  // the KPI's first window
  EXPECT_EQ(low.for_s, 600);
  EXPECT_EQ(low.keep_firing_for_s, 300);
  EXPECT_EQ(low.group_by, "channel");
  EXPECT_EQ(low.labels.at("team"), "ads");
  EXPECT_EQ(cat->alerts[1].target_band, kpi::Band::kWarning);
  EXPECT_EQ(cat->alerts[2].kind, kpi::AlertKind::kChange);
  EXPECT_DOUBLE_EQ(cat->alerts[2].threshold, -0.2);
  EXPECT_EQ(cat->alerts[2].compare_to_s, 7 * 86400);
  EXPECT_EQ(cat->alerts[3].periods, 7);
  EXPECT_EQ(cat->alerts[3].direction, -1);
  EXPECT_EQ(cat->alerts[4].family, kpi::Family::kCampaign);
  EXPECT_EQ(cat->alerts[4].max_age_s, 600);
  EXPECT_EQ(cat->alerts[5].kind, kpi::AlertKind::kFreshness);
}

TEST(AlertCatalogTest, ErrorsSayWhereAndWhat) {
  struct Case {
    const char* yaml;
    const char* want;
  };
  const Case cases[] = {
      {"alerts:\n  A: {kpi: nope, condition: \"> 1\"}\n", "unknown KPI 'nope'"},
      {"alerts:\n  A: {kpi: ctr, condition: \"~ 1\"}\n", "must be an operator"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 4%\"}\n", "without '%'"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", group_by: region}\n", "not a dimension of KPI 'ctr'"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", change: {compare_to: 7d, condition: \"< -1%\"}}\n",
       "exactly one of"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", annotations: {summary: \"{{ $nope }}\"}}\n",
       "unknown placeholder"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", severity: loud}\n", "severity 'loud'"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", for: soon}\n", "t.yaml:"},
      {"alerts:\n  A: {absence: {family: ads, for: 1m}}\n", "family 'ads'"},
      {"alerts:\n  A: {kpi: ctr, condition: \"> 1\", labels: {alertname: x}}\n", "set by kpid"},
  };
  for (const auto& c : cases) {
    auto cat = WithAlerts(c.yaml);
    ASSERT_FALSE(cat.ok()) << c.yaml;
    EXPECT_NE(cat.status().message().find(c.want), std::string::npos) << cat.status().message();
    EXPECT_NE(cat.status().message().find("t.yaml:"), std::string::npos) << cat.status().message();
  }
}

TEST(AlertCatalogTest, DefaultCatalogShipsTheSeedsAlerts) {
  auto cat = kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml");
  ASSERT_TRUE(cat.ok()) << cat.status();
  std::map<std::string, const kpi::AlertRule*> by_name;
  for (const auto& a : cat->alerts) by_name[a.name] = &a;
  for (const char* n : {"ChurnRateSpike", "TrialConversionDrop", "MrrGrowthStall", "PageLoadDegradation", "NpsDecline",
                        "SupportVolumeHigh", "BudgetOverspend", "CtrDrop", "PipelineFreshness"}) {
    ASSERT_TRUE(by_name.count(n)) << n;
    EXPECT_TRUE(by_name[n]->annotations.count("summary")) << n;
  }
  const auto& churn = *by_name["ChurnRateSpike"];
  EXPECT_EQ(cat->kpis[static_cast<size_t>(churn.kpi)].name, "logo_churn_rate");
  EXPECT_EQ(churn.threshold, 4);
  EXPECT_EQ(churn.for_s, 2 * 86400);
  EXPECT_EQ(churn.severity, "critical");
}

}  // namespace
}  // namespace kpistream::alerting
