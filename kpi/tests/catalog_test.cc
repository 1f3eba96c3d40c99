#include "kpi/catalog.h"

#include <gtest/gtest.h>

namespace kpistream::kpi {
namespace {

std::string ErrorOf(std::string_view yaml) {
  auto c = ParseCatalog(yaml, "kpis.yaml");
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(CatalogTest, DefaultCatalogLoadsAndHasTheFirstKpis) {
  auto c = ParseCatalog(DefaultCatalogYaml(), "config/kpis.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* k : {"impressions", "clicks", "ctr", "conversions", "spend", "cpa", "roas", "dau", "sessions",
                        "trial_starts", "trial_to_paid", "mrr"}) {
    EXPECT_NE(c->FindKpi(k), nullptr) << k;
  }
  const auto* ctr = c->FindKpi("ctr");
  EXPECT_EQ(c->KpiDimensions(*ctr), (std::vector<std::string>{"channel", "campaign_id", "region"}));
}

TEST(CatalogTest, ParsesAMeasure) {
  auto c = ParseCatalog(R"(
measures:
  spend:
    family: campaign
    types: [spend]
    aggregation: sum
    field: cost
    group_by: [channel]
    bucket: 10s
kpis:
  spend:
    formula: spend
    unit: currency
)",
                        "x.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& m = c->measures[0];
  EXPECT_EQ(m.aggregation, Aggregation::kSum);
  EXPECT_EQ(m.bucket_seconds, 10);
  EXPECT_EQ(m.types.size(), 1u);
  EXPECT_EQ(c->kpis[0].windows, (std::vector<std::string>{"1h", "24h"}));
}

TEST(CatalogTest, ErrorsHaveFileLineColumnAndAFix) {
  const std::string base = "measures:\n  clicks:\n    family: campaign\n    types: [click]\n";
  EXPECT_EQ(ErrorOf(base + "    aggregation: count\n    group_by: [colour]\n"),
            "kpis.yaml:6:16: cannot group campaign events by 'colour' (dimensions: type, campaign_id, "
            "account_id, user_id, channel, creative, audience, region)");
  EXPECT_NE(ErrorOf(base + "    aggregation: median\n").find("kpis.yaml:5:18: unknown aggregation 'median'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: sum\n    field: costs\n").find("kpis.yaml:6:12: unknown field 'costs'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: sum\n    field: channel\n").find("is not numeric"), std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: count\n    bucket: 7m\n").find("must divide one hour"), std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: count\nkpis:\n  ctr:\n    formula: clicks / views\n")
                .find("kpis.yaml:8:14: formula \"clicks / views\": unknown name 'views': not a measure, KPI or "
                      "constant of this file at column 10"),
            std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: count\nkpis:\n  c:\n    formula: clicks\n    windows: [5x]\n")
                .find("bad window \"5x\""),
            std::string::npos);
  EXPECT_NE(ErrorOf("measures:\n  a:\n    family: ads\n").find("kpis.yaml:3:13: unknown family 'ads'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("measures: [\n").find("YAML syntax error"), std::string::npos);
  EXPECT_NE(ErrorOf(base + "    aggregation: count\n    colour: red\n").find("unknown key 'colour'"),
            std::string::npos);
}

TEST(CatalogTest, ReportsEveryErrorNotJustTheFirst) {
  const auto err = ErrorOf(
      "measures:\n  a:\n    family: campaign\n    aggregation: nope\n  b:\n    family: crm\n    types: [x]\n    "
      "aggregation: count\n");
  EXPECT_NE(err.find("unknown aggregation"), std::string::npos);
  EXPECT_NE(err.find("unknown crm event type 'x'"), std::string::npos);
}

TEST(CatalogTest, FiltersQuantilesLastTargetsAndTimezone) {
  auto c = ParseCatalog(R"YAML(
timezone: Europe/Berlin
measures:
  errors: {family: product, types: [api_call], aggregation: count, filter: "status_code >= 500"}
  calls: {family: product, types: [api_call], aggregation: count}
  latency: {family: product, types: [api_call], aggregation: quantile, field: latency_ms, lateness: 10m}
  last_mrr: {family: crm, aggregation: last, field: mrr_delta, max_groups: 50, group_by: [account_id]}
kpis:
  error_rate:
    formula: errors / calls
    target: {direction: lower, excellent: 0.001, good: 0.01, warning: 0.05}
  availability: {formula: 1 - error_rate}
  p95_latency: {formula: p95(latency) / 1000, unit: seconds}
  p90_latency: {formula: "quantile(latency, 0.9)"}
)YAML",
                        "x.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->timezone, "Europe/Berlin");
  EXPECT_EQ(c->measures[2].lateness_ms, 600000);
  EXPECT_EQ(c->measures[3].max_groups, 50u);
  ASSERT_NE(c->measures[0].filter, nullptr);
  // KPI references are inlined: availability depends on errors and calls.
  const auto* avail = c->FindKpi("availability");
  EXPECT_EQ(avail->measures.size(), 2u);
  const auto& t = *c->FindKpi("error_rate")->target;
  EXPECT_EQ(t.Classify(0.0005), Band::kExcellent);
  EXPECT_EQ(t.Classify(0.005), Band::kGood);
  EXPECT_EQ(t.Classify(0.02), Band::kWarning);
  EXPECT_EQ(t.Classify(0.2), Band::kCritical);
  EXPECT_EQ(t.Classify(std::nullopt), Band::kUnknown);
}

TEST(CatalogTest, SemanticErrors) {
  const std::string m =
      "measures:\n  calls: {family: product, types: [api_call], aggregation: count}\n"
      "  lat: {family: product, aggregation: quantile, field: latency_ms}\n";
  EXPECT_NE(
      ErrorOf(m + "kpis:\n  a: {formula: b + 1}\n  b: {formula: a * 2}\n").find("is part of a cycle: a -> b -> a"),
      std::string::npos);
  EXPECT_NE(ErrorOf(m + "kpis:\n  a: {formula: lat}\n").find("is a quantile sketch: use p50(lat)"), std::string::npos);
  EXPECT_NE(ErrorOf(m + "kpis:\n  a: {formula: p95(calls)}\n").find("'calls' is not a quantile measure"),
            std::string::npos);
  EXPECT_NE(ErrorOf(m + "kpis:\n  a: {formula: calls, target: {direction: higher, good: 9, excellent: 5}}\n")
                .find("must be lower than"),
            std::string::npos);
  EXPECT_NE(ErrorOf("timezone: Mars/Olympus\n" + m).find("unknown time zone 'Mars/Olympus'"), std::string::npos);
  EXPECT_NE(ErrorOf("measures:\n  e: {family: product, aggregation: count, filter: \"status_code > 'x'\"}\n")
                .find("filter \"status_code > 'x'\": type mismatch"),
            std::string::npos);
  EXPECT_NE(ErrorOf("measures:\n  e: {family: product, aggregation: count, max_groups: 0}\n").find("max_groups"),
            std::string::npos);
}

// Every threshold is the floor of its band; `critical` names the least
// acceptable value, the same edge as `warning`. A value with a target is
// never left without a band.
TEST(CatalogTest, TargetBands) {
  const std::string m = "measures:\n  calls: {family: product, types: [api_call], aggregation: count}\nkpis:\n";
  auto band = [&](const std::string& target, double v) {
    auto c = ParseCatalog(m + "  k: {formula: calls, target: " + target + "}\n", "t.yaml");
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->kpis[0].target->Classify(v) : Band::kUnknown;
  };
  // Only `critical`: at least it is warning, worse is critical.
  EXPECT_EQ(band("{direction: higher, critical: 10}", 12), Band::kWarning);
  EXPECT_EQ(band("{direction: higher, critical: 10}", 8), Band::kCritical);
  EXPECT_EQ(band("{direction: lower, critical: 10}", 8), Band::kWarning);
  EXPECT_EQ(band("{direction: lower, critical: 10}", 12), Band::kCritical);
  // `good` and `critical`: the seeds' "below target but acceptable" band.
  EXPECT_EQ(band("{direction: higher, good: 20, critical: 10}", 25), Band::kGood);
  EXPECT_EQ(band("{direction: higher, good: 20, critical: 10}", 15), Band::kWarning);
  EXPECT_EQ(band("{direction: higher, good: 20, critical: 10}", 5), Band::kCritical);
  // Only `good`: below it is critical.
  EXPECT_EQ(band("{direction: higher, good: 20}", 19), Band::kCritical);
  EXPECT_EQ(band("{direction: higher, warning: 10, critical: 10}", 10), Band::kWarning);
  EXPECT_NE(ErrorOf(m + "  k: {formula: calls, target: {direction: higher, warning: 12, critical: 10}}\n")
                .find("name the same edge"),
            std::string::npos);
  EXPECT_NE(ErrorOf(m + "  k: {formula: calls, target: {direction: higher}}\n").find("at least one threshold"),
            std::string::npos);
}

// export: breakdowns of a KPI for /metrics, by its own dimensions.
TEST(CatalogTest, Exports) {
  const std::string m =
      "measures:\n  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel, region]}\n"
      "  imps: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}\nkpis:\n";
  auto c = ParseCatalog(m + "  ctr:\n    formula: clicks / imps\n    dashboards: [marketing, executive]\n"
                            "    export: [{group_by: [channel]}, {group_by: [channel], top: 5, order: asc}]\n",
                        "e.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& k = c->kpis[0];
  ASSERT_EQ(k.exports.size(), 2u);
  EXPECT_EQ(k.exports[0].group_by, std::vector<std::string>{"channel"});
  EXPECT_EQ(k.exports[0].top, 0u);
  EXPECT_EQ(k.exports[1].top, 5u);
  EXPECT_TRUE(k.exports[1].ascending);
  EXPECT_EQ(k.dashboards, (std::vector<std::string>{"marketing", "executive"}));
  // region is not a dimension of ctr (imps lacks it).
  EXPECT_NE(ErrorOf(m + "  ctr: {formula: clicks / imps, export: [{group_by: [region]}]}\n")
                .find("cannot be exported by 'region' (its dimensions: channel)"),
            std::string::npos);
  EXPECT_NE(ErrorOf(m + "  ctr: {formula: clicks / imps, export: [{group_by: [channel], top: 0}]}\n").find("top"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf(m + "  ctr: {formula: clicks / imps, export: [{group_by: [channel], order: up}]}\n").find("order 'up'"),
      std::string::npos);
  EXPECT_NE(
      ErrorOf(m + "  ctr: {formula: clicks / imps, export: {group_by: [channel]}}\n").find("export must be a list"),
      std::string::npos);
}

TEST(CatalogTest, Durations) {
  EXPECT_EQ(*ParseDuration("30s"), 30);
  EXPECT_EQ(*ParseDuration("5m"), 300);
  EXPECT_EQ(*ParseDuration("24h"), 86400);
  EXPECT_EQ(*ParseDuration("30d"), 30 * 86400);
  EXPECT_TRUE(ValidateWindow("all").ok());
  EXPECT_TRUE(ValidateWindow("mtd").ok());
  EXPECT_FALSE(ValidateWindow("month").ok());
  for (const char* bad : {"", "5", "m", "-5m", "5w", "1.5h", "0s"}) EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
}

}  // namespace
}  // namespace kpistream::kpi

namespace kpistream::kpi {
namespace {

// Found by tools/fuzz/run (catalog_fuzz): a list as a map key made yaml-cpp
// throw from inside the parser.
TEST(CatalogTest, NonScalarKeysAreErrorsNotCrashes) {
  EXPECT_NE(ErrorOf("measures:\n  a: {family: campaign, aggregation: count, [x]: 1}\n").find("kpis.yaml:2:"),
            std::string::npos);
  EXPECT_FALSE(ParseCatalog("? [a, b]\n: 1\n", "k.yaml").ok());
  EXPECT_FALSE(ParseCatalog("measures:\n  ? {x: 1}\n  : {family: crm}\n", "k.yaml").ok());
}

}  // namespace
}  // namespace kpistream::kpi
