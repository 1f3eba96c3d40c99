#include "tools/kpictl/generate.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kpi/prometheus_names.h"

namespace kpistream::tools {
namespace {

using nlohmann::json;

kpi::Catalog Catalog(const std::string& kpis, const std::string& extra = "") {
  auto c = kpi::ParseCatalog(
      "measures:\n"
      "  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}\n"
      "  imps: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}\n"
      "  latency: {family: product, types: [api_call], aggregation: quantile, field: latency_ms}\n"
      "kpis:\n" +
          kpis + extra,
      "t.yaml");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : kpi::Catalog();
}

json Panel(const json& dash, const std::string& title) {
  for (const auto& p : dash["panels"]) {
    if (p["title"] == title) return p;
  }
  return json();
}

TEST(GenerateTest, MetricNamesCarryTheUnit) {
  auto c = Catalog(
      "  ctr: {formula: clicks / imps * 100, unit: percent}\n  clicks: {formula: clicks, unit: count}\n"
      "  lat: {formula: p95(latency) / 1000, unit: seconds}\n  lat_seconds: {formula: p95(latency), unit: seconds}\n");
  EXPECT_EQ(kpi::KpiMetricName(c.kpis[0]), "kpistream_kpi_ctr_percent");
  EXPECT_EQ(kpi::KpiMetricName(c.kpis[1]), "kpistream_kpi_clicks");
  EXPECT_EQ(kpi::KpiMetricName(c.kpis[2]), "kpistream_kpi_lat_seconds");
  EXPECT_EQ(kpi::KpiMetricName(c.kpis[3]), "kpistream_kpi_lat_seconds");  // not _seconds_seconds
}

// Tiles with the target as thresholds, a breakdown per export, the funnel,
// variables for the window and each exported dimension.
TEST(GenerateTest, DashboardFollowsTheCatalog) {
  auto c = Catalog(
      "  ctr:\n    formula: clicks / imps * 100\n    unit: percent\n    windows: [1h, 24h]\n"
      "    target: {direction: higher, excellent: 5, good: 2, warning: 1}\n    dashboards: [marketing]\n"
      "    export: [{group_by: [channel], top: 3}]\n"
      "  clicks: {formula: clicks, unit: count, windows: [24h], dashboards: [marketing]}\n"
      "  imps: {formula: imps, unit: count, windows: [24h], dashboards: [marketing]}\n",
      "funnels:\n  marketing: [imps, clicks]\n");
  const auto dashboards = GrafanaDashboards(c);
  ASSERT_EQ(dashboards.size(), 2u);  // marketing + operations
  const auto d = json::parse(dashboards.at("kpistream-marketing"));
  EXPECT_EQ(d["uid"], "kpistream-marketing");
  const auto tile = Panel(d, "ctr");
  ASSERT_FALSE(tile.is_null());
  EXPECT_EQ(tile["fieldConfig"]["defaults"]["unit"], "percent");
  const auto steps = tile["fieldConfig"]["defaults"]["thresholds"]["steps"];
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0]["color"], "red");
  EXPECT_EQ(steps[1]["value"], 1);
  EXPECT_EQ(steps[3]["color"], "blue");
  EXPECT_EQ(steps[3]["value"], 5);
  EXPECT_EQ(tile["targets"][0]["expr"],
            "kpistream_kpi_ctr_percent{window=\"$window\",breakdown=\"\"} or on() "
            "kpistream_kpi_ctr_percent{window=\"1h\",breakdown=\"\"}");
  const auto by = Panel(d, "ctr by channel (top 3 and the rest)");
  ASSERT_FALSE(by.is_null());
  EXPECT_NE(by["targets"][0]["expr"].get<std::string>().find("breakdown=\"channel\",channel=~\"$channel\""),
            std::string::npos);
  EXPECT_FALSE(Panel(d, "Funnel: imps → clicks (24h)").is_null());
  std::vector<std::string> vars;
  for (const auto& v : d["templating"]["list"]) vars.push_back(v["name"]);
  EXPECT_EQ(vars, (std::vector<std::string>{"datasource", "window", "channel"}));
  EXPECT_GE(DashboardExpressions(dashboards.at("kpistream-marketing")).size(), 7u);
}

// Lower is better: the best band first, worse from each threshold up.
TEST(GenerateTest, ThresholdsWhenLowerIsBetter) {
  auto c = Catalog(
      "  cpc: {formula: clicks / imps, unit: ratio, target: {direction: lower, excellent: 1, good: 2, "
      "warning: 3}, dashboards: [x]}\n");
  const auto d = json::parse(GrafanaDashboards(c).at("kpistream-x"));
  const auto steps = Panel(d, "cpc")["fieldConfig"]["defaults"]["thresholds"]["steps"];
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0]["color"], "blue");
  EXPECT_EQ(steps[1]["color"], "green");
  EXPECT_EQ(steps[1]["value"], 1);
  EXPECT_EQ(steps[3]["color"], "red");
  EXPECT_EQ(steps[3]["value"], 3);
}

// Ratio KPIs get a recording rule from their parts; alert rules are
// mirrored, and what PromQL cannot say is listed with why.
TEST(GenerateTest, Rules) {
  auto c =
      Catalog("  ctr: {formula: clicks / imps * 100, unit: percent, windows: [24h], export: [{group_by: [channel]}]}\n",
              "alerts:\n"
              "  LowCtr: {kpi: ctr, window: 24h, condition: \"< 1\", for: 10m, severity: warning,\n"
              "           annotations: {summary: \"CTR {{ $value }} under {{ $threshold }}\"}}\n"
              "  CtrDrop: {kpi: ctr, window: 24h, group_by: channel, change: {compare_to: 7d, condition: \"< -20%\"}}\n"
              "  Odd: {kpi: ctr, window: 24h, anomaly: {period: 7d}}\n"
              "  Stale: {freshness: {max: 5m}, for: 2m}\n");
  const auto rules = PrometheusRules(c);
  EXPECT_NE(rules.find("record: window_breakdown:kpistream_kpi_ctr_percent:ratio_of_sums"), std::string::npos) << rules;
  EXPECT_NE(rules.find("kpistream_kpi_input{kpi=\"ctr\",input=\"clicks\",breakdown!=\"\"}"), std::string::npos);
  EXPECT_NE(rules.find("* 100"), std::string::npos);
  EXPECT_NE(rules.find("kpistream_kpi_ctr_percent{window=\"24h\",breakdown=\"\"} < 1"), std::string::npos) << rules;
  EXPECT_NE(rules.find("CTR {{ $value | printf \"%.4g\" }} under 1"), std::string::npos) << rules;
  EXPECT_NE(rules.find("offset 7d)) * 100 < -20"), std::string::npos) << rules;
  EXPECT_NE(rules.find("breakdown=\"channel\""), std::string::npos);
  EXPECT_NE(rules.find("kpistream_freshness_seconds > 300"), std::string::npos);
  EXPECT_NE(rules.find("Not expressible in PromQL, evaluated by kpid only: Odd"), std::string::npos);
}

}  // namespace
}  // namespace kpistream::tools
