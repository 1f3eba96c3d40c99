#include "ingest/admission.h"

#include <gtest/gtest.h>

#include <set>

namespace kpistream::ingest {
namespace {

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = kpi::ParseCatalog(R"(
measures:
  fast: {family: campaign, aggregation: count, lateness: 1m, group_by: [channel], max_groups: 2}
  slow: {family: campaign, aggregation: count, lateness: 1h}
  wide: {family: campaign, aggregation: count, group_by: [channel, region], max_groups: 5}
)",
                               "t.yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    cat_ = std::move(*c);
    ids_.measures = {10, 11, 12};
    ids_.dimensions = {20, 21};  // channel, region
  }
  kpi::Catalog cat_;
  kpi::StateIds ids_;
  std::vector<std::pair<uint32_t, std::string>> values_;
};

TEST_F(AdmissionTest, LatenessIsPerMeasureAgainstThePartitionsNewestEvent) {
  PartitionAdmission a(cat_, ids_, PartitionAdmission::kNoEvents, nullptr);
  EXPECT_FALSE(a.Late(0, 10'000'000));
  a.Observe(10'000'000);
  EXPECT_EQ(a.newest_event_ms(), 10'000'000);
  // 5 minutes behind: late for `fast` (1m), still fine for `slow` (1h).
  EXPECT_TRUE(a.Late(0, 10'000'000 - 300'000));
  EXPECT_FALSE(a.Late(1, 10'000'000 - 300'000));
  // Exactly at the bound is still on time.
  EXPECT_FALSE(a.Late(0, 10'000'000 - 60'000));
  EXPECT_TRUE(a.Late(1, 10'000'000 - 7'200'000));
  // An older event does not move the watermark back.
  a.Observe(5'000'000);
  EXPECT_EQ(a.newest_event_ms(), 10'000'000);
}

TEST_F(AdmissionTest, WatermarkSurvivesRestartFromTheStoredValue) {
  PartitionAdmission restored(cat_, ids_, 50'000'000, nullptr);
  EXPECT_TRUE(restored.Late(1, 40'000'000));
}

// The cap is per dimension and shared by every measure grouping by it: the
// measures of a KPI agree on which values are kept.
TEST_F(AdmissionTest, ValuesOverTheCapGoToOtherForEveryMeasureDeterministically) {
  PartitionAdmission a(cat_, ids_, PartitionAdmission::kNoEvents, nullptr);
  ASSERT_EQ(cat_.dimensions.size(), 2u);
  EXPECT_EQ(cat_.dimensions[0].max_values, 2u);  // the smallest max_groups of fast (2) and wide (5)
  std::vector<std::string> seen;
  for (const char* ch : {"a", "b", "a", "c", "d", "b"}) {
    bool overflow = false;
    seen.emplace_back(a.Admit(0, ch, &values_, &overflow));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "a", "__other__", "__other__", "b"}));
  ASSERT_EQ(values_.size(), 2u);
  EXPECT_EQ(values_[0].first, 20u);
  // Another dimension is independent: its values are kept.
  bool overflow = true;
  EXPECT_EQ(a.Admit(1, "eu", &values_, &overflow), "eu");
  EXPECT_FALSE(overflow);
  // After a restart only the count is restored; committed values are found
  // by lookup, so the decisions stay the same.
  std::set<std::pair<uint32_t, std::string>> committed(values_.begin(), values_.end());
  PartitionAdmission b(cat_, ids_, 1000, [&](uint32_t id, std::string_view v) {
    return committed.count({id, std::string(v)}) > 0;
  });
  b.RestoreCount(20, 2);
  b.RestoreCount(21, 1);
  values_.clear();
  EXPECT_EQ(b.Admit(0, "c", &values_, &overflow), "__other__");
  EXPECT_TRUE(overflow);
  EXPECT_EQ(b.Admit(0, "b", &values_, &overflow), "b");
  EXPECT_FALSE(overflow);
  EXPECT_TRUE(values_.empty());
}

}  // namespace
}  // namespace kpistream::ingest
