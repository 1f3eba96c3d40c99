#include "state/store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "state/aggregate.h"

namespace kpistream::state {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_store_test_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Store> OpenStore() {
    auto s = Store::Open({.path = dir_.string()});
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  std::filesystem::path dir_;
};

TEST_F(StoreTest, PartialsAndOffsetCommitTogetherAndSurviveReopen) {
  const uint64_t src = SourceId(1, 0);
  {
    auto store = OpenStore();
    for (int round = 0; round < 3; ++round) {
      WriteBatch b(*store);
      Agg a;
      a.Add(1.5, ToMicros(1.5));
      b.MergePartial(AggKey(Tier::kFine, 7, src, 60, "g"), EncodeAgg(a));
      b.PutOffset(src, 100 * (round + 1), 1000 + round);
      b.PutKeptValue(src, 7, "g");
      b.PutKeptCount(src, 7, 1);
      ASSERT_TRUE(store->Commit(&b).ok());
    }
  }
  auto store = OpenStore();
  auto off = store->ReadOffset(src);
  ASSERT_TRUE(off.ok());
  ASSERT_TRUE(off->has_value());
  EXPECT_EQ((*off)->next_offset, 300);
  EXPECT_EQ((*off)->newest_event_ms, 1002);
  EXPECT_TRUE(*store->HasKeptValue(src, 7, "g"));
  EXPECT_FALSE(*store->HasKeptValue(src, 7, "h"));
  EXPECT_FALSE(*store->HasKeptValue(src, 8, "g"));
  EXPECT_EQ(*store->ReadKeptCounts(src), (std::vector<std::pair<uint32_t, uint32_t>>{{7, 1}}));
  EXPECT_TRUE(store->ReadKeptCounts(SourceId(1, 1))->empty());
  int rows = 0;
  ASSERT_TRUE(store
                  ->Scan(Tier::kFine, 7, src, 0, 120,
                         [&](int64_t bucket, std::string_view g, std::string_view enc) {
                           Agg a;
                           ASSERT_TRUE(DecodeAgg(enc, &a));
                           EXPECT_EQ(bucket, 60);
                           EXPECT_EQ(g, "g");
                           EXPECT_EQ(a.count, 3);
                           EXPECT_DOUBLE_EQ(a.sum(), 4.5);
                           ++rows;
                         })
                  .ok());
  EXPECT_EQ(rows, 1);
  auto offs = store->ListOffsets();
  ASSERT_TRUE(offs.ok());
  ASSERT_EQ(offs->size(), 1u);
  EXPECT_EQ((*offs)[0].second, 300);
}

TEST_F(StoreTest, ScanHonoursBucketRangeAndSeries) {
  auto store = OpenStore();
  WriteBatch b(*store);
  Agg a;
  a.Add(1, ToMicros(1));
  for (int64_t bucket : {0, 60, 120, 180}) {
    b.MergePartial(AggKey(Tier::kFine, 1, SourceId(1, 0), bucket, ""), EncodeAgg(a));
    b.MergePartial(AggKey(Tier::kFine, 1, SourceId(1, 1), bucket, ""), EncodeAgg(a));
    b.MergePartial(AggKey(Tier::kFine, 2, SourceId(1, 0), bucket, ""), EncodeAgg(a));
  }
  ASSERT_TRUE(store->Commit(&b).ok());
  std::vector<int64_t> seen;
  ASSERT_TRUE(store
                  ->Scan(Tier::kFine, 1, SourceId(1, 0), 60, 180,
                         [&](int64_t bucket, std::string_view, std::string_view) { seen.push_back(bucket); })
                  .ok());
  EXPECT_EQ(seen, (std::vector<int64_t>{60, 120}));
}

TEST_F(StoreTest, RetentionDropsOldBucketsPerTier) {
  const int64_t now = 100 * kDaySeconds;
  auto s = Store::Open({.path = dir_.string(),
                        .retention_fine_s = 2 * kDaySeconds,
                        .retention_hour_s = 10 * kDaySeconds,
                        .retention_day_s = 0,
                        .now_s = [now] { return now; }});
  ASSERT_TRUE(s.ok());
  auto& store = *s;
  Agg a;
  a.Add(1, ToMicros(1));
  WriteBatch b(*store);
  for (int64_t age_days : {1, 5, 50}) {
    const int64_t t = now - age_days * kDaySeconds;
    b.MergePartial(AggKey(Tier::kFine, 1, 1, t, ""), EncodeAgg(a));
    b.MergePartial(AggKey(Tier::kHour, 1, 1, t, ""), EncodeAgg(a));
    b.MergePartial(AggKey(Tier::kDay, 1, 1, t, ""), EncodeAgg(a));
  }
  // Measure 2 stores hour-wide buckets, measure 3 day-wide ones: their
  // finest tier is all they have.
  for (int64_t age_days : {1, 5, 50}) {
    const int64_t t = now - age_days * kDaySeconds;
    b.MergePartial(AggKey(Tier::kFine, 2, 1, t, ""), EncodeAgg(a));
    b.MergePartial(AggKey(Tier::kFine, 3, 1, t, ""), EncodeAgg(a));
  }
  ASSERT_TRUE(store->Commit(&b).ok());
  // Before the catalog is bound, nothing in the fine tier is dropped.
  ASSERT_TRUE(store->CompactForTest().ok());
  auto count = [&](Tier tier, uint32_t measure = 1) {
    int n = 0;
    EXPECT_TRUE(
        store->Scan(tier, measure, 1, 0, now + 1, [&](int64_t, std::string_view, std::string_view) { ++n; }).ok());
    return n;
  };
  EXPECT_EQ(count(Tier::kFine), 3);
  store->SetFineTier(1, Tier::kFine);
  store->SetFineTier(2, Tier::kHour);
  store->SetFineTier(3, Tier::kDay);
  ASSERT_TRUE(store->CompactForTest().ok());
  EXPECT_EQ(count(Tier::kFine), 1);     // 1 day old only
  EXPECT_EQ(count(Tier::kHour), 2);     // 1 and 5 days
  EXPECT_EQ(count(Tier::kDay), 3);      // forever
  EXPECT_EQ(count(Tier::kFine, 2), 2);  // kept as the hour tier
  EXPECT_EQ(count(Tier::kFine, 3), 3);  // kept as the day tier
}

// A measure whose stored shape changes gets a series of its own; going back
// finds the old one; a store from before shapes keeps its plain ids.
TEST_F(StoreTest, SeriesIdsFollowTheShape) {
  auto store = OpenStore();
  const uint32_t legacy = *store->IdFor("measure", "clicks");
  const auto first = *store->SeriesIdFor("measure", "clicks", "count|channel|60");
  EXPECT_EQ(first.id, legacy);
  EXPECT_EQ(first.first_shape, "count|channel|60");
  const auto regrouped = *store->SeriesIdFor("measure", "clicks", "count|campaign_id,channel|60");
  EXPECT_NE(regrouped.id, legacy);
  EXPECT_EQ(regrouped.first_shape, "count|channel|60");
  EXPECT_EQ(store->SeriesIdFor("measure", "clicks", "count|campaign_id,channel|60")->id, regrouped.id);
  EXPECT_EQ(store->SeriesIdFor("measure", "clicks", "count|channel|60")->id, legacy);
  store.reset();
  store = OpenStore();
  EXPECT_EQ(store->SeriesIdFor("measure", "clicks", "count|campaign_id,channel|60")->id, regrouped.id);
}

TEST_F(StoreTest, NameIdsAreStable) {
  uint32_t a, b;
  {
    auto store = OpenStore();
    a = *store->IdFor("measure", "clicks");
    b = *store->IdFor("measure", "impressions");
    EXPECT_NE(a, b);
    EXPECT_EQ(*store->IdFor("measure", "clicks"), a);
  }
  auto store = OpenStore();
  EXPECT_EQ(*store->IdFor("measure", "impressions"), b);
  EXPECT_EQ(*store->IdFor("topic", "clicks"), 1u);
}

TEST_F(StoreTest, OpenFailsWithClearError) {
  auto s = Store::Open({.path = "/proc/definitely/not/writable"});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/proc/definitely/not/writable"), std::string::npos);
}

}  // namespace
}  // namespace kpistream::state
