#include "gen/scenario.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::gen {
namespace {

constexpr int64_t kStart = 1700006400;  // a UTC midnight
constexpr int64_t kDay = 86400;

struct Seen {
  int64_t time_ms;
  kpi::Family family;
  int type;
  std::string key;
};

std::vector<Seen> Play(double from, double to) {
  std::vector<Seen> out;
  EXPECT_TRUE(EmitScenario("churn-spike", kStart, from, to, [&](const Record& r) {
                out.push_back({r.time_ms, r.family, r.type, r.key});
              }).ok());
  return out;
}

TEST(ScenarioTest, ChurnSpikeIsTimeOrderedAndSlicesAddUp) {
  const auto all = Play(0, 80);
  ASSERT_FALSE(all.empty());
  for (size_t i = 1; i < all.size(); ++i) ASSERT_LE(all[i - 1].time_ms, all[i].time_ms);
  auto a = Play(0, 46), b = Play(46, 48.5), c = Play(48.5, 80);
  EXPECT_EQ(a.size() + b.size() + c.size(), all.size());
  for (const auto& e : b) {
    EXPECT_GE(e.time_ms, (kStart + 46 * kDay) * 1000);
    EXPECT_LT(e.time_ms, (kStart + 48 * kDay + kDay / 2) * 1000);
  }
}

// The story's arithmetic: cancellations in the 30 days before t over the
// customers at the window's start, as logo_churn_rate computes it.
double ChurnPercent(const std::vector<Seen>& all, int64_t t_s) {
  int started = 0, cancelled_before = 0, cancelled_in = 0;
  for (const auto& e : all) {
    if (e.family != kpi::Family::kCrm || e.time_ms >= t_s * 1000) continue;
    if (e.type == events::v1::CRM_SUBSCRIPTION_STARTED) ++started;
    if (e.type != events::v1::CRM_SUBSCRIPTION_CANCELLED) continue;
    (e.time_ms < (t_s - 30 * kDay) * 1000 ? cancelled_before : cancelled_in) += 1;
  }
  return 100.0 * cancelled_in / (started - cancelled_before);
}

TEST(ScenarioTest, ChurnSpikeCrossesFourPercentOnDay45AndLeavesBeforeDay80) {
  const auto all = Play(0, 80);
  EXPECT_LT(ChurnPercent(all, kStart + 44 * kDay), 2);
  EXPECT_GT(ChurnPercent(all, kStart + 46 * kDay), 4.5);
  EXPECT_GT(ChurnPercent(all, kStart + 48 * kDay), 4.5);  // still above after the `for: 2d`
  EXPECT_LT(ChurnPercent(all, kStart + 80 * kDay), 2);
  // Every cancelled account had started, and none cancels twice.
  std::set<std::string> cancelled;
  for (const auto& e : all) {
    if (e.family == kpi::Family::kCrm && e.type == events::v1::CRM_SUBSCRIPTION_CANCELLED) {
      EXPECT_TRUE(cancelled.insert(e.key).second) << e.key;
    }
  }
}

TEST(ScenarioTest, UnknownScenarioIsAnError) {
  auto st = EmitScenario("nope", kStart, 0, 1, [](const Record&) {});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("churn-spike"), std::string::npos);
}

}  // namespace
}  // namespace kpistream::gen
