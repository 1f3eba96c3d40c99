#include "kpi/filter.h"

#include <gtest/gtest.h>

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::kpi {
namespace {

using events::v1::ProductEvent;

ProductEvent Call(int status, double latency, std::string plan) {
  ProductEvent e;
  e.set_type(events::v1::PRODUCT_API_CALL);
  e.set_status_code(status);
  e.set_latency_ms(latency);
  e.set_plan(std::move(plan));
  return e;
}

bool Match(std::string_view text, const ProductEvent& e) {
  auto f = Filter::Compile(text, Family::kProduct);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() && f->Matches(e);
}

std::string Error(std::string_view text) {
  auto f = Filter::Compile(text, Family::kProduct);
  EXPECT_FALSE(f.ok());
  return f.ok() ? "" : std::string(f.status().message());
}

TEST(FilterTest, ComparisonsAndLogic) {
  const auto e = Call(503, 120.5, "pro");
  EXPECT_TRUE(Match("status_code >= 500", e));
  EXPECT_FALSE(Match("status_code < 500", e));
  EXPECT_TRUE(Match("latency_ms > 100 and plan == 'pro'", e));
  EXPECT_TRUE(Match("plan == 'free' or status_code != 200", e));
  EXPECT_FALSE(Match("not (plan == \"pro\")", e));
  EXPECT_TRUE(Match("plan in ('pro', 'enterprise')", e));
  EXPECT_FALSE(Match("plan not in ('pro', 'enterprise')", e));
  EXPECT_TRUE(Match("status_code in (500, 502, 503)", e));
  EXPECT_TRUE(Match("type == 'api_call'", e));
  EXPECT_FALSE(Match("type in ('page_load', 'error')", e));
  // and binds tighter than or
  EXPECT_TRUE(Match("plan == 'free' and status_code == 1 or latency_ms == 120.5", e));
}

TEST(FilterTest, ErrorsSayWhatAndWhere) {
  EXPECT_EQ(
      Error("colour == 'red'"),
      "filter \"colour == 'red'\": unknown field 'colour' of product events (fields: event_id, type, account_id, "
      "user_id, session_id, plan, feature, region, page, duration_seconds, latency_ms, status_code, signup_cohort, "
      "cohort_month) at column 1");
  EXPECT_NE(Error("plan == 5").find("type mismatch: field 'plan' is text; quote the value"), std::string::npos);
  EXPECT_NE(Error("status_code == 'x'").find("type mismatch: field 'status_code' is a number"), std::string::npos);
  EXPECT_NE(Error("plan < 'b'").find("supports only == and !="), std::string::npos);
  EXPECT_NE(Error("type == 'teleport'").find("unknown product type 'teleport'"), std::string::npos);
  EXPECT_NE(Error("plan == 'a' and").find("expected a field name"), std::string::npos);
  EXPECT_NE(Error("(plan == 'a'").find("expected ')'"), std::string::npos);
  EXPECT_NE(Error("plan == 'a").find("unterminated"), std::string::npos);
  EXPECT_NE(Error("plan ~ 'a'").find("expected a comparison"), std::string::npos);
  EXPECT_NE(Error("event_time == 1").find("unknown field 'event_time'"), std::string::npos);
}

}  // namespace
}  // namespace kpistream::kpi
