#include "api/request.h"

#include <fmt/format.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

namespace kpistream::api {
namespace {

const kpi::Catalog& Cat() {
  static const kpi::Catalog c = *kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml");
  return c;
}

template <typename Req>
Req Parse(const std::string& text) {
  Req r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

constexpr int64_t kNow = 1795305600;

TEST(RequestTest, GetKpiResolvesTheWindowAndSortsTheFilter) {
  auto p = PlanGetKpi(Parse<v1::GetKpiRequest>(R"(kpi: "ctr" window: "1h" group_by: "channel"
      filter { key: "region" value: "eu" } filter { key: "campaign_id" value: "c1" })"),
                      Cat(), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->window, "1h");
  EXPECT_EQ(p->query.end, kNow);
  EXPECT_EQ(p->query.start, kNow - 3600);
  EXPECT_EQ(p->query.group_by, std::vector<std::string>{"channel"});
  ASSERT_EQ(p->query.filter.size(), 2u);
  EXPECT_EQ(p->query.filter[0].first, "campaign_id");
  EXPECT_EQ(p->kpi->name, "ctr");
}

TEST(RequestTest, GroupByTakesSeveralDimensionsSeparatedByCommas) {
  auto p = PlanGetKpi(Parse<v1::GetKpiRequest>(R"(kpi: "ctr" group_by: "channel, region")"), Cat(), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->query.group_by, (std::vector<std::string>{"channel", "region"}));
  for (const char* bad : {"channel,", ",", "channel,,region"}) {
    auto q = PlanGetKpi(Parse<v1::GetKpiRequest>(fmt::format(R"(kpi: "ctr" group_by: "{}")", bad)), Cat(), kNow);
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(RequestTest, GetKpiDefaultsToTheFirstWindowAndRoundsEndTimeUp) {
  auto p = PlanGetKpi(Parse<v1::GetKpiRequest>(R"(kpi: "ctr" end_time { seconds: 1000 nanos: 1 })"), Cat(), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->window, Cat().FindKpi("ctr")->windows.front());
  EXPECT_EQ(p->query.end, 1001);  // the instant asked for is inside the window
}

TEST(RequestTest, GetKpiErrorsSayWhatToFix) {
  struct Case {
    std::string req;
    absl::StatusCode code;
    std::string what;
  };
  const Case cases[] = {
      {"", absl::StatusCode::kInvalidArgument, "kpi is required"},
      {R"(kpi: "nope")", absl::StatusCode::kNotFound, "unknown KPI 'nope'"},
      {R"(kpi: "ctr" window: "5 minutes")", absl::StatusCode::kInvalidArgument, "window"},
      {R"(kpi: "ctr" end_time { seconds: -1 })", absl::StatusCode::kInvalidArgument, "between 1970 and 2200"},
      {R"(kpi: "ctr" end_time { seconds: 7258118400 })", absl::StatusCode::kInvalidArgument, "between 1970 and 2200"},
      {R"(kpi: "ctr" end_time { seconds: 1 nanos: -5 })", absl::StatusCode::kInvalidArgument, "between 1970 and 2200"},
  };
  for (const auto& c : cases) {
    auto p = PlanGetKpi(Parse<v1::GetKpiRequest>(c.req), Cat(), kNow);
    ASSERT_FALSE(p.ok()) << c.req;
    EXPECT_EQ(p.status().code(), c.code) << c.req;
    EXPECT_NE(p.status().message().find(c.what), std::string::npos) << p.status();
  }
}

TEST(RequestTest, CalendarWindowAtItsFirstInstantIsEmptyNotAnError) {
  // Found by tools/fuzz/request_fuzz: "mtd" at 00:00 on the 1st resolves to
  // [t, t); GetKpi used to answer INVALID_ARGUMENT for it.
  auto p = PlanGetKpi(Parse<v1::GetKpiRequest>(R"(kpi: "clicks" window: "mtd" end_time { seconds: 1793491200 })"),
                      Cat(), kNow);  // 2026-11-01T00:00:00Z
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->query.start, p->query.end);
}

TEST(RequestTest, QueryRange) {
  auto p = PlanQueryRange(Parse<v1::QueryRangeRequest>(R"(kpi: "clicks" start_time { seconds: 100 }
      end_time { seconds: 7300 } step: "1h" group_by: "channel")"),
                          Cat());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->step, 3600);
  EXPECT_EQ(p->query.start, 100);
  EXPECT_EQ(p->query.end, 7300);
  const std::pair<std::string, std::string> bad[] = {
      {R"(kpi: "clicks" step: "1h")", "start_time and end_time are required"},
      {R"(kpi: "clicks" start_time { seconds: 1 } end_time { seconds: 99999999999 } step: "1h")", "between 1970"},
      {R"(kpi: "clicks" start_time { seconds: 1 } end_time { seconds: 2 })", "step is required"},
      {R"(kpi: "clicks" start_time { seconds: 1 } end_time { seconds: 2 } step: "soon")", "duration"},
  };
  for (const auto& [req, what] : bad) {
    auto r = PlanQueryRange(Parse<v1::QueryRangeRequest>(req), Cat());
    ASSERT_FALSE(r.ok()) << req;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
  }
  EXPECT_EQ(PlanQueryRange(Parse<v1::QueryRangeRequest>(R"(kpi: "nope")"), Cat()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kpistream::api
