#include "pipeline/catalog.h"

#include <gtest/gtest.h>

namespace kpistream::pipeline {
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
                .find("kpis.yaml:8:14: formula \"clicks / views\": unknown measure 'views' at column 10"),
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

TEST(CatalogTest, Durations) {
  EXPECT_EQ(*ParseDuration("30s"), 30);
  EXPECT_EQ(*ParseDuration("5m"), 300);
  EXPECT_EQ(*ParseDuration("24h"), 86400);
  EXPECT_EQ(*ParseDuration("30d"), 30 * 86400);
  EXPECT_EQ(*ParseWindow("all"), kAllTime);
  for (const char* bad : {"", "5", "m", "-5m", "5w", "1.5h", "0s"}) EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
}

}  // namespace
}  // namespace kpistream::pipeline
