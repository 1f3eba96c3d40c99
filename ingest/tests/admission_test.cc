#include "ingest/admission.h"

#include <gtest/gtest.h>

#include <set>

#include "state/keys.h"

namespace kpistream::ingest {
namespace {

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = kpi::ParseCatalog(R"(
measures:
  fast: {family: campaign, aggregation: count, lateness: 1m, group_by: [channel], max_groups: 2}
  slow: {family: campaign, aggregation: count, lateness: 1h}
)",
                               "t.yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    cat_ = std::move(*c);
    cat_.measures[0].id = 10;
    cat_.measures[1].id = 11;
  }
  std::vector<Contribution> Both(const std::string& channel) {
    key_.clear();
    state::AppendGroupValue(&key_, channel);
    return {{.measure = 0, .group = key_}, {.measure = 1, .group = ""}};
  }
  AdmitResult Admit(PartitionAdmission& a, int64_t t, std::vector<Contribution>* cs) {
    late_.clear();
    over_.clear();
    return a.Admit(t, cs, &groups_, &late_, &over_);
  }
  kpi::Catalog cat_;
  std::string key_;
  std::vector<std::pair<uint32_t, std::string>> groups_;
  std::vector<int> late_, over_;
};

TEST_F(AdmissionTest, LatenessIsPerMeasureAgainstThePartitionsNewestEvent) {
  PartitionAdmission a(cat_, PartitionAdmission::kNoEvents, nullptr);
  auto cs = Both("search");
  EXPECT_EQ(Admit(a, 10'000'000, &cs).late, 0);
  EXPECT_EQ(a.newest_event_ms(), 10'000'000);
  // 5 minutes behind: late for `fast` (1m), still fine for `slow` (1h).
  cs = Both("search");
  auto r = Admit(a, 10'000'000 - 300'000, &cs);
  EXPECT_EQ(r.late, 1);
  EXPECT_FALSE(r.all_late());
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].measure, 1);
  EXPECT_EQ(late_, std::vector<int>{0});
  // Exactly at the bound is still on time.
  cs = Both("search");
  EXPECT_EQ(Admit(a, 10'000'000 - 60'000, &cs).late, 0);
  // 2 hours behind: late for both -> the record is rejected as late, and it
  // does not move the watermark.
  cs = Both("search");
  r = Admit(a, 10'000'000 - 7'200'000, &cs);
  EXPECT_TRUE(r.all_late());
  EXPECT_TRUE(cs.empty());
  EXPECT_EQ(a.newest_event_ms(), 10'000'000);
}

TEST_F(AdmissionTest, WatermarkSurvivesRestartFromTheStoredValue) {
  PartitionAdmission restored(cat_, 50'000'000, nullptr);
  auto cs = Both("x");
  EXPECT_TRUE(Admit(restored, 40'000'000, &cs).all_late());
}

TEST_F(AdmissionTest, GroupsOverTheCapGoToOtherDeterministically) {
  PartitionAdmission a(cat_, PartitionAdmission::kNoEvents, nullptr);
  std::vector<std::string> seen;
  for (const char* ch : {"a", "b", "a", "c", "d", "b"}) {
    auto cs = Both(ch);
    Admit(a, 1000, &cs);
    std::vector<std::string_view> vals;
    ASSERT_TRUE(state::SplitGroupKey(cs[0].group, &vals));
    seen.emplace_back(vals[0]);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "a", "__other__", "__other__", "b"}));
  ASSERT_EQ(groups_.size(), 2u);
  EXPECT_EQ(groups_[0].first, 10u);
  // After a restart only the count is restored; committed groups are found
  // by lookup, so the decisions stay the same.
  std::set<std::pair<uint32_t, std::string>> committed(groups_.begin(), groups_.end());
  PartitionAdmission b(cat_, 1000, [&](uint32_t id, std::string_view g) {
    return committed.count({id, std::string(g)}) > 0;
  });
  b.RestoreCount(10, static_cast<uint32_t>(committed.size()));
  groups_.clear();
  auto cs = Both("c");
  EXPECT_EQ(Admit(b, 1000, &cs).overflow, 1);
  cs = Both("b");
  EXPECT_EQ(Admit(b, 1000, &cs).overflow, 0);
  EXPECT_TRUE(groups_.empty());
}

}  // namespace
}  // namespace kpistream::ingest
