#include "state/store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>

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
  // A store whose clock reads kRetentionNow, keeping fine buckets 2 days,
  // hour buckets 10 days and day buckets forever.
  static constexpr int64_t kRetentionNow = 100 * kDaySeconds;
  std::unique_ptr<Store> OpenRetentionStore() {
    auto s = Store::Open({.path = dir_.string(),
                          .retention_fine_s = 2 * kDaySeconds,
                          .retention_hour_s = 10 * kDaySeconds,
                          .retention_day_s = 0,
                          .now_s = [] { return kRetentionNow; }});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
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
  const int64_t now = kRetentionNow;
  auto store = OpenRetentionStore();
  ASSERT_TRUE(store);
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

// With a changelog, an owned source's expired keys must leave with a
// tombstone: compaction keeps them, CollectExpired deletes them in slices,
// resuming where it stopped; other sources still expire by compaction.
TEST_F(StoreTest, ASweptSourceExpiresByCollectExpiredInSlicesNotByCompaction) {
  const int64_t now = kRetentionNow;
  auto store = OpenRetentionStore();
  ASSERT_TRUE(store);
  const uint64_t swept = SourceId(1, 0), other = SourceId(1, 1);
  ASSERT_EQ(*store->IdFor("measure", "m"), 1u);  // measure ids 1.. exist
  store->SetFineTier(1, Tier::kFine);
  Agg a;
  a.Add(1, ToMicros(1));
  WriteBatch b(*store);
  for (uint64_t src : {swept, other}) {
    for (int64_t age_days : {1, 5, 50}) {
      const int64_t t = now - age_days * kDaySeconds;
      for (Tier tier : {Tier::kFine, Tier::kHour, Tier::kDay}) {
        b.MergePartial(AggKey(tier, 1, src, t, "g1"), EncodeAgg(a));
        b.MergePartial(AggKey(tier, 1, src, t, "g2"), EncodeAgg(a));
      }
    }
    b.PutEventId(src, "old", 1000, 0);
    b.PutEventId(src, "new", 5000, 1);
    b.PutOffset(src, 2, 5000);
  }
  ASSERT_TRUE(store->Commit(&b).ok());
  store->SetEventIdHorizon(swept, 2000);
  store->SetEventIdHorizon(other, 2000);
  store->SetExpiryBySweep(swept, true);
  ASSERT_TRUE(store->CompactForTest().ok());
  auto count = [&](Tier tier, uint64_t src) {
    int n = 0;
    EXPECT_TRUE(store->Scan(tier, 1, src, 0, now + 1, [&](int64_t, std::string_view, std::string_view) { ++n; }).ok());
    return n;
  };
  EXPECT_EQ(count(Tier::kFine, other), 2);
  EXPECT_EQ(count(Tier::kHour, other), 4);
  EXPECT_FALSE(store->LookupEventId(other, "old")->has_value());
  EXPECT_EQ(count(Tier::kFine, swept), 6) << "compaction must leave a swept source's expired keys alone";
  EXPECT_EQ(count(Tier::kHour, swept), 6);
  EXPECT_TRUE(store->LookupEventId(swept, "old")->has_value());

  // Expired: fine 5 and 50 days (4 keys), hour 50 days (2), one event id.
  Store::ExpiryCursor cursor;
  WriteBatch deletes(*store);
  size_t total = 0, calls = 0;
  for (;;) {
    Store::ExpiryProgress progress;
    ASSERT_TRUE(store->CollectExpired(swept, {.deletes = 3, .visits = 100}, &cursor, &deletes, &progress).ok());
    ++calls;
    total += progress.deleted;
    EXPECT_LE(progress.deleted, 3u);
    if (progress.done) break;
    ASSERT_LT(calls, 10u);
  }
  EXPECT_EQ(total, 7u);
  EXPECT_EQ(calls, 3u);
  EXPECT_EQ(deletes.Count(), 7u);
  ASSERT_TRUE(store->Commit(&deletes).ok());
  EXPECT_EQ(count(Tier::kFine, swept), 2);
  EXPECT_EQ(count(Tier::kHour, swept), 4);
  EXPECT_EQ(count(Tier::kDay, swept), 6);  // kept forever
  EXPECT_FALSE(store->LookupEventId(swept, "old")->has_value());
  EXPECT_TRUE(store->LookupEventId(swept, "new")->has_value());
  auto offset = store->ReadOffset(swept);
  ASSERT_TRUE(offset.ok() && offset->has_value()) << "the offsets record never expires";

  // Nothing is left to collect; the other source is never touched.
  Store::ExpiryCursor again;
  WriteBatch none(*store);
  Store::ExpiryProgress progress;
  ASSERT_TRUE(store->CollectExpired(swept, {}, &again, &none, &progress).ok());
  EXPECT_TRUE(progress.done);
  EXPECT_EQ(progress.deleted, 0u);
  // A visit budget cuts a call short too, and the next resumes.
  Store::ExpiryCursor step;
  size_t steps = 0;
  do {
    ASSERT_TRUE(store->CollectExpired(swept, {.deletes = 100, .visits = 1}, &step, &none, &progress).ok());
    EXPECT_EQ(progress.deleted, 0u);
    EXPECT_LE(progress.visited, 1u);
  } while (!progress.done && ++steps < 100);
  EXPECT_TRUE(progress.done);
  EXPECT_GT(steps, 1u);
  EXPECT_EQ(count(Tier::kFine, other), 2);
}

// Deletes in a commit batch reach the changelog as null values, and fold
// with merges of the same key in batch order.
TEST_F(StoreTest, ResolveChangesReportsDeletesWithANullValue) {
  auto store = OpenStore();
  const uint64_t src = SourceId(1, 0);
  Agg one;
  one.Add(1, ToMicros(1));
  const std::string k1 = AggKey(Tier::kFine, 1, src, 0, "a");
  const std::string k2 = AggKey(Tier::kFine, 1, src, 60, "a");
  const std::string k3 = AggKey(Tier::kFine, 1, src, 120, "a");
  {
    WriteBatch b(*store);
    for (const auto& k : {k1, k2, k3}) b.MergePartial(k, EncodeAgg(one));
    b.PutEventId(src, "e", 1000, 0);
    ASSERT_TRUE(store->Commit(&b).ok());
  }
  WriteBatch b(*store);
  b.Delete(Keyspace::kAgg, k1);
  b.Delete(Keyspace::kAgg, k2);
  b.MergePartial(k2, EncodeAgg(one));  // starts over after the delete
  b.MergePartial(k3, EncodeAgg(one));
  b.Delete(Keyspace::kAgg, k3);
  b.Delete(Keyspace::kEventIds, EventIdKey(src, "e"));
  std::map<std::string, std::optional<std::string>> shipped;
  ASSERT_TRUE(store
                  ->ResolveChanges(&b,
                                   [&](Keyspace, std::string_view k, std::string_view v) {
                                     shipped[std::string(k)] =
                                         v.data() ? std::optional<std::string>(std::string(v)) : std::nullopt;
                                   })
                  .ok());
  ASSERT_EQ(shipped.size(), 4u);
  EXPECT_FALSE(shipped.at(k1).has_value());
  ASSERT_TRUE(shipped.at(k2).has_value());
  Agg k2_value;
  ASSERT_TRUE(DecodeAgg(*shipped.at(k2), &k2_value));
  EXPECT_EQ(k2_value.count, 1) << "a merge after a delete is the delta alone";
  EXPECT_FALSE(shipped.at(k3).has_value());
  EXPECT_FALSE(shipped.at(EventIdKey(src, "e")).has_value());
  ASSERT_TRUE(store->Commit(&b).ok());
  std::map<int64_t, int64_t> counts;
  ASSERT_TRUE(store
                  ->Scan(Tier::kFine, 1, src, 0, 1000,
                         [&](int64_t bucket, std::string_view, std::string_view enc) {
                           Agg v;
                           ASSERT_TRUE(DecodeAgg(enc, &v));
                           counts[bucket] = v.count;
                         })
                  .ok());
  EXPECT_EQ(counts, (std::map<int64_t, int64_t>{{60, 1}}));
  EXPECT_FALSE(store->LookupEventId(src, "e")->has_value());
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
