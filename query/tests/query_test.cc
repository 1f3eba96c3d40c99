#include "query/query.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "ingest/local_ingest.h"
#include "kpistream/events/v1/events.pb.h"

namespace kpistream::query {
namespace {

using events::v1::CampaignEvent;

class QueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_query_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    auto cat = kpi::ParseCatalog(R"(
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel, region]}
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel, region]}
  spend: {family: campaign, types: [spend], aggregation: sum, field: cost, group_by: [channel]}
  max_cost: {family: campaign, types: [spend], aggregation: max, field: cost, group_by: [channel]}
  users: {family: campaign, aggregation: distinct, field: user_id, bucket: 1h}
kpis:
  ctr: {formula: clicks / impressions}
  spend: {formula: spend, unit: currency}
  max_cost: {formula: max_cost}
  users: {formula: users, unit: count}
  imps: {formula: impressions, unit: count}
  clicks: {formula: clicks, unit: count}
)",
                                 "test.yaml");
    ASSERT_TRUE(cat.ok()) << cat.status();
    catalog_ = std::move(*cat);
    OpenStore();
  }
  void TearDown() override {
    ingest_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void OpenStore() {
    ingest_.reset();
    store_.reset();
    // Test data is from 2025: keep every tier forever.
    auto store = state::Store::Open({.path = dir_.string(), .retention_fine_s = 0, .retention_hour_s = 0});
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    ids_ = *kpi::BindStateIds(catalog_, store_.get());
    source_ = std::make_unique<LocalPartialSource>(*store_);
    ingest_ = std::make_unique<ingest::LocalIngest>(catalog_, ids_, store_.get(), ingest::ApplierOptions{}, clock_);
  }
  QueryService Service() { return QueryService(catalog_, ids_, *source_, clock_, {.retention = {}}); }

  // Applies events through the engine's own step, in event-time order (as
  // one partition would deliver them), and commits.
  void Apply(std::vector<CampaignEvent> events, int32_t partition) {
    std::stable_sort(events.begin(), events.end(),
                     [](const auto& a, const auto& b) { return a.event_time().seconds() < b.event_time().seconds(); });
    for (const auto& e : events) {
      auto o = ingest_->Apply(1, partition, kpi::Family::kCampaign, e.SerializeAsString());
      ASSERT_TRUE(o.ok()) << o.status();
      ASSERT_EQ(*o, ingest::PartitionApplier::Outcome::kApplied);
    }
    ASSERT_TRUE(ingest_->Commit().ok());
  }

  static CampaignEvent Ev(events::v1::CampaignEventType t, int64_t sec, std::string channel, double cost = 0,
                          std::string user = "") {
    CampaignEvent e;
    e.set_event_id("x");
    e.set_type(t);
    e.mutable_event_time()->set_seconds(sec);
    e.set_channel(std::move(channel));
    e.set_region("eu");
    e.set_cost(cost);
    e.set_user_id(std::move(user));
    return e;
  }

  std::filesystem::path dir_;
  kpi::Catalog catalog_;
  kpi::StateIds ids_;
  state::FakeClock clock_{1763856000 * 1000LL + 20 * 86400 * 1000LL};
  std::unique_ptr<state::Store> store_;
  std::unique_ptr<LocalPartialSource> source_;
  std::unique_ptr<ingest::LocalIngest> ingest_;
};

TEST_F(QueryTest, WindowsGroupsAndFiltersAcrossPartitionsAndTiers) {
  const int64_t day = 1763856000;  // a UTC midnight
  std::vector<CampaignEvent> p0, p1;
  // Spread over two days so every tier is used.
  for (int i = 0; i < 100; ++i) {
    p0.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, day + i * 1500, i % 2 ? "search" : "social"));
    p1.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, day + i * 1500 + 7, "search"));
  }
  for (int i = 0; i < 30; ++i)
    p1.push_back(Ev(events::v1::CAMPAIGN_CLICK, day + i * 4000, i < 10 ? "social" : "search"));
  p0.push_back(Ev(events::v1::CAMPAIGN_SPEND, day + 10, "search", 0.1));
  p0.push_back(Ev(events::v1::CAMPAIGN_SPEND, day + 20, "search", 0.2));
  p1.push_back(Ev(events::v1::CAMPAIGN_SPEND, day + 30, "social", 1.25));
  Apply(p0, 0);
  Apply(p1, 1);

  QueryService q = Service();
  KpiQuery all{.kpi = "ctr", .start = day - 86400, .end = day + 3 * 86400};
  auto v = q.Get(all);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->values.size(), 1u);
  EXPECT_DOUBLE_EQ(*v->values[0].value, 30.0 / 200.0);

  all.group_by = {"channel"};
  v = q.Get(all);
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->values.size(), 2u);
  EXPECT_EQ(v->values[0].group[0].second, "search");
  EXPECT_DOUBLE_EQ(*v->values[0].value, 20.0 / 150.0);
  EXPECT_DOUBLE_EQ(*v->values[1].value, 10.0 / 50.0);

  KpiQuery filtered{.kpi = "ctr", .start = day, .end = day + 86400, .filter = {{"channel", "social"}}};
  v = q.Get(filtered);
  ASSERT_TRUE(v.ok());
  // First day: social impressions at even i with i*1500 < 86400 -> i in 0..56 even: 29; clicks i<10 -> all day 0.
  EXPECT_DOUBLE_EQ(*v->values[0].value, 10.0 / 29.0);

  // Sums are exact in fixed point: 0.1 + 0.2 + 1.25.
  v = q.Get({.kpi = "spend", .start = day, .end = day + 60});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v->values[0].value, 1.55);
  v = q.Get({.kpi = "max_cost", .start = day, .end = day + 60});
  EXPECT_EQ(*v->values[0].value, 1.25);
  // No spend in the window: max has no value, the sum is 0.
  v = q.Get({.kpi = "max_cost", .start = day + 3600, .end = day + 7200});
  EXPECT_FALSE(v->values[0].value.has_value());
  v = q.Get({.kpi = "spend", .start = day + 3600, .end = day + 7200});
  EXPECT_EQ(*v->values[0].value, 0);
  // No impressions: CTR is "no value", not inf.
  v = q.Get({.kpi = "ctr", .start = day - 7200, .end = day});
  EXPECT_FALSE(v->values[0].value.has_value());
}

// Get's cache: one evaluation per query between two commits and within one
// second of the store's clock; a commit or the next second is seen at once.
TEST_F(QueryTest, CachedResultsLastUntilTheNextCommitOrSecond) {
  clock_.SetMs(1763856000 * 1000LL);
  const int64_t day = 1763856000 - 1763856000 % 86400;
  Apply({Ev(events::v1::CAMPAIGN_IMPRESSION, day + 5, "search")}, 0);
  QueryService q = Service();
  const KpiQuery imps{.kpi = "imps", .start = day, .end = day + 60};
  auto value = [&](const KpiQuery& kq) {
    auto v = q.Get(kq);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() && v->values.size() == 1 && v->values[0].value ? *v->values[0].value : -1.0;
  };
  EXPECT_EQ(value(imps), 1);
  EXPECT_EQ(value(imps), 1);
  EXPECT_EQ(q.cache_stats().hits, 1u);
  EXPECT_EQ(q.cache_stats().misses, 1u);

  // A commit is seen by the next call.
  Apply({Ev(events::v1::CAMPAIGN_IMPRESSION, day + 6, "social")}, 1);
  EXPECT_EQ(value(imps), 2);
  EXPECT_EQ(q.cache_stats().misses, 2u);
  // Other windows, filters and groupings are other entries.
  EXPECT_EQ(value({.kpi = "imps", .start = day - 60, .end = day}), 0);
  EXPECT_EQ(value({.kpi = "imps", .start = day, .end = day + 60, .filter = {{"channel", "social"}}}), 1);
  auto grouped = q.Get({.kpi = "imps", .start = day, .end = day + 60, .group_by = {"channel"}});
  ASSERT_TRUE(grouped.ok());
  EXPECT_EQ(grouped->values.size(), 2u);
  EXPECT_EQ(q.cache_stats().misses, 5u);
  EXPECT_EQ(value(imps), 2);
  EXPECT_EQ(q.cache_stats().hits, 2u);
  // Filter values are opaque bytes: one that spells out another query's
  // filters is still another query.
  const KpiQuery two{.kpi = "imps", .start = day, .end = day + 60, .filter = {{"channel", "social"}, {"region", "eu"}}};
  EXPECT_EQ(value(two), 1);
  EXPECT_EQ(value({.kpi = "imps", .start = day, .end = day + 60, .filter = {{"channel", "social\x1fregion=eu"}}}), 0);
  EXPECT_EQ(value({.kpi = "imps", .start = day, .end = day + 60, .filter = {{"channel", "social=region:eu"}}}), 0);
  EXPECT_EQ(q.cache_stats().misses, 8u);
  // The next second of the clock evaluates again.
  clock_.AdvanceMs(1000);
  EXPECT_EQ(value(imps), 2);
  EXPECT_EQ(q.cache_stats().misses, 9u);
  // Errors are not cached.
  EXPECT_EQ(q.Get({.kpi = "nope", .start = day, .end = day + 60}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(q.Get({.kpi = "nope", .start = day, .end = day + 60}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(q.cache_stats().hits, 2u);
}

// GetBatch shares Get's cache, only at its snapshot's own commit: a batch
// after a commit never takes an answer cached before it.
TEST_F(QueryTest, BatchesShareTheCacheAtTheirOwnCommit) {
  clock_.SetMs(1763856000 * 1000LL);
  const int64_t day = 1763856000 - 1763856000 % 86400;
  Apply({Ev(events::v1::CAMPAIGN_IMPRESSION, day + 5, "search")}, 0);
  QueryService q = Service();
  const KpiQuery imps{.kpi = "imps", .start = day, .end = day + 60};
  const KpiQuery social{.kpi = "imps", .start = day, .end = day + 60, .filter = {{"channel", "social"}}};
  auto values = [&](const std::vector<KpiQuery>& qs) {
    std::vector<double> out;
    auto answers = q.GetBatch(qs);
    EXPECT_TRUE(answers.ok()) << answers.status();
    if (!answers.ok()) return out;
    for (const auto& a : *answers) {
      out.push_back(a.ok() && a->values.size() == 1 && a->values[0].value ? *a->values[0].value : -1.0);
    }
    return out;
  };
  ASSERT_TRUE(q.Get(imps).ok());  // cached at the first commit
  EXPECT_EQ(values({imps, social}), (std::vector<double>{1, 0}));
  EXPECT_EQ(q.cache_stats().hits, 1u);  // imps from the cache; social computed and cached
  ASSERT_TRUE(q.Get(social).ok());
  EXPECT_EQ(q.cache_stats().hits, 2u);

  Apply({Ev(events::v1::CAMPAIGN_IMPRESSION, day + 6, "social")}, 1);
  EXPECT_EQ(values({imps, social}), (std::vector<double>{2, 1}));  // not the answers cached before
  EXPECT_EQ(q.cache_stats().hits, 2u);
  ASSERT_TRUE(q.Get(imps).ok());  // the cache moves to the new commit
  EXPECT_EQ(values({imps, social}), (std::vector<double>{2, 1}));
  EXPECT_EQ(q.cache_stats().hits, 3u);
  clock_.AdvanceMs(1000);  // the next second: nothing cached is taken
  EXPECT_EQ(values({imps}), (std::vector<double>{2}));
  EXPECT_EQ(q.cache_stats().hits, 3u);
}

// Concurrent calls of one query between two commits: every caller gets the
// same answer, and most share one evaluation instead of running their own.
TEST_F(QueryTest, ConcurrentCallsShareOneEvaluation) {
  clock_.SetMs((1763856000 + 3600) * 1000LL);
  const int64_t day = 1763856000 - 1763856000 % 86400;
  std::vector<CampaignEvent> evs;
  for (int i = 0; i < 3000; ++i) {
    evs.push_back(Ev(i % 10 ? events::v1::CAMPAIGN_IMPRESSION : events::v1::CAMPAIGN_CLICK, day + i,
                     i % 3 ? "search" : "social"));
  }
  Apply(evs, 0);
  QueryService q = Service();
  const KpiQuery ctr{.kpi = "ctr", .start = day, .end = day + 3600, .group_by = {"channel"}};
  constexpr int kThreads = 8, kCalls = 50;
  std::vector<std::vector<GroupValue>> got(kThreads * kCalls);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        auto v = q.Get(ctr);
        if (v.ok()) got[static_cast<size_t>(t * kCalls + i)] = v->values;
      }
    });
  }
  for (auto& th : threads) th.join();
  const QueryService fresh = Service();
  const auto want = fresh.Get(ctr);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(want->values.size(), 2u);
  for (const auto& v : got) {
    ASSERT_EQ(v.size(), 2u);
    for (size_t g = 0; g < 2; ++g) {
      EXPECT_EQ(v[g].group, want->values[g].group);
      EXPECT_EQ(v[g].value, want->values[g].value);
    }
  }
  const auto st = q.cache_stats();
  EXPECT_EQ(st.hits + st.misses + st.shared, static_cast<uint64_t>(kThreads * kCalls));
  EXPECT_EQ(st.misses, 1u);  // one sequence, one second: a single evaluation
}

TEST_F(QueryTest, SlidingWindowMatchesBruteForce) {
  const int64_t base = 1763856000 + 1234;
  std::vector<CampaignEvent> evs;
  for (int i = 0; i < 500; ++i) evs.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, base + i * 397, "search"));
  Apply(evs, 0);
  QueryService q = Service();
  for (int64_t start = base - base % 60; start < base + 500 * 397; start += 7 * 3600 + 120) {
    for (int64_t len : {60, 3600, 5 * 3600 + 60, 86400 + 3600}) {
      int64_t expected = 0;
      for (const auto& e : evs) expected += e.event_time().seconds() >= start && e.event_time().seconds() < start + len;
      auto v = q.Get({.kpi = "imps", .start = start, .end = start + len});
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(*v->values[0].value, expected) << start << "+" << len;
      auto r = q.Range({.kpi = "imps", .start = start, .end = start + 2 * len}, len);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->series.size(), 1u);
      ASSERT_EQ(r->series[0].points.size(), 2u);
      EXPECT_EQ(*r->series[0].points[0].value, expected);
      EXPECT_EQ(r->series[0].points[1].time, start + len);
    }
  }
}

TEST_F(QueryTest, DistinctUsersAcrossBucketsAndPartitions) {
  const int64_t day = 1763856000;
  std::vector<CampaignEvent> p0, p1;
  for (int i = 0; i < 3000; ++i) {
    p0.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, day + (i % 48) * 1800, "s", 0, "u" + std::to_string(i % 1000)));
    p1.push_back(Ev(events::v1::CAMPAIGN_CLICK, day + (i % 24) * 3600, "s", 0, "u" + std::to_string(500 + i % 1000)));
  }
  Apply(p0, 0);
  Apply(p1, 1);
  QueryService q = Service();
  auto v = q.Get({.kpi = "users", .start = day, .end = day + 86400});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_NEAR(*v->values[0].value, 1500, 15);
}

TEST(QueryRetentionTest, EdgesPastFineRetentionRoundToHoursAndSaySo) {
  const auto dir = std::filesystem::temp_directory_path() / ("kpistream_retention_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const int64_t day = 1763856000;
  const int64_t now = day + 10 * 86400;
  auto cat =
      kpi::ParseCatalog("measures:\n  c: {family: campaign, aggregation: count}\nkpis:\n  c: {formula: c}\n", "t.yaml");
  ASSERT_TRUE(cat.ok());
  {
    auto store =
        state::Store::Open({.path = dir.string(), .retention_fine_s = 2 * 86400, .now_s = [now] { return now; }});
    ASSERT_TRUE(store.ok());
    const auto ids = *kpi::BindStateIds(*cat, store->get());
    state::FakeClock clock(now * 1000);
    ingest::LocalIngest in(*cat, ids, store->get(), {}, clock);
    // One event per 10 minutes over the first day.
    for (int64_t t = day; t < day + 86400; t += 600) {
      CampaignEvent e;
      e.set_event_id("e");
      e.set_type(events::v1::CAMPAIGN_CLICK);
      e.mutable_event_time()->set_seconds(t);
      ASSERT_EQ(*in.Apply(1, 0, kpi::Family::kCampaign, e.SerializeAsString()),
                ingest::PartitionApplier::Outcome::kApplied);
    }
    ASSERT_TRUE(in.Commit().ok());
    ASSERT_TRUE((*store)->CompactForTest().ok());
    LocalPartialSource source(**store);
    QueryService q(*cat, ids, source, clock, {.retention = {.fine = 2 * 86400, .hour = 0}});
    // [00:30, 02:30): fine buckets are gone; the edges round out to
    // [00:00, 03:00) = 18 events instead of 12, and the answer says so.
    auto v = q.Get({.kpi = "c", .start = day + 1800, .end = day + 9000});
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v->values[0].value, 18);
    EXPECT_TRUE(v->rounded);
    EXPECT_EQ(v->covered, (kpi::TimeRange{day, day + 10800}));
    // Whole hours are unaffected.
    v = q.Get({.kpi = "c", .start = day + 3600, .end = day + 7200});
    EXPECT_EQ(*v->values[0].value, 6);
    EXPECT_FALSE(v->rounded);
  }
  std::filesystem::remove_all(dir);
}

TEST_F(QueryTest, BadRequestsSayWhatToFix) {
  QueryService q = Service();
  auto v = q.Get({.kpi = "nope", .start = 0, .end = 60});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  v = q.Get({.kpi = "ctr", .start = 0, .end = 60, .group_by = {"campaign"}});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(v.status().message()),
            "KPI 'ctr' cannot be grouped by 'campaign' (dimensions: channel, region)");
  // An empty window (a calendar window at its first instant) has no data.
  v = q.Get({.kpi = "ctr", .start = 60, .end = 60});
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->values.size(), 1u);
  EXPECT_FALSE(v->values[0].value.has_value());
  v = q.Get({.kpi = "ctr", .start = 61, .end = 60});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(q.Range({.kpi = "ctr", .start = 60, .end = 60}, 60).status().code(), absl::StatusCode::kInvalidArgument);
  auto r = q.Range({.kpi = "ctr", .start = 0, .end = 86400 * 365}, 60);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = q.Range({.kpi = "users", .start = 0, .end = 86400}, 60);
  EXPECT_NE(std::string(r.status().message()).find("not a multiple"), std::string::npos);
}

// Issue 14, item 3: calendar windows in zones whose offset is not a whole
// hour. A distinct-user measure declared with 1h buckets is stored at the
// zone's alignment, so "yesterday" there is exact.
TEST(CalendarZoneTest, YesterdayInHalfAndQuarterHourZonesIsExact) {
  struct Case {
    const char* zone;
    int64_t local_midnight_utc;  // 2026-11-28 00:00 local, in UTC seconds
  };
  for (const Case& z : {Case{"Asia/Kolkata", 1764268200}, Case{"Asia/Kathmandu", 1764267300},
                        Case{"Australia/Adelaide", 1764250200}, Case{"America/St_Johns", 1764300600}}) {
    SCOPED_TRACE(z.zone);
    const auto dir = std::filesystem::temp_directory_path() / ("kpistream_zone_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    auto cat = kpi::ParseCatalog(fmt::format(R"(
timezone: {}
measures:
  users: {{family: product, types: [login], aggregation: distinct, field: user_id, bucket: 1h}}
kpis:
  dau: {{formula: users, unit: count, windows: [yesterday]}}
)",
                                             z.zone),
                                 "t.yaml");
    ASSERT_TRUE(cat.ok()) << cat.status();
    EXPECT_LT(cat->measures[0].bucket_seconds, 3600);
    {
      auto store = state::Store::Open({.path = dir.string(), .retention_fine_s = 0, .retention_hour_s = 0});
      ASSERT_TRUE(store.ok());
      const auto ids = *kpi::BindStateIds(*cat, store->get());
      const int64_t m = z.local_midnight_utc;
      state::FakeClock clock((m + 2 * 86400) * 1000);
      ingest::LocalIngest in(*cat, ids, store->get(), {}, clock);
      // u0 just before local midnight (the day before), u1 and u5 just after
      // it, u4 mid-day, u3 just after the next local midnight.
      for (const auto& [user, at] : std::vector<std::pair<std::string, int64_t>>{{"u0", m - 20 * 60},
                                                                                 {"u1", m + 10 * 60},
                                                                                 {"u5", m + 20 * 60},
                                                                                 {"u4", m + 12 * 3600},
                                                                                 {"u3", m + 86400 + 10 * 60}}) {
        events::v1::ProductEvent e;
        e.set_event_id(user);
        e.set_type(events::v1::PRODUCT_LOGIN);
        e.set_user_id(user);
        e.mutable_event_time()->set_seconds(at);
        ASSERT_EQ(*in.Apply(2, 0, kpi::Family::kProduct, e.SerializeAsString()),
                  ingest::PartitionApplier::Outcome::kApplied);
      }
      ASSERT_TRUE(in.Commit().ok());
      LocalPartialSource source(**store);
      QueryService q(*cat, ids, source, clock, {.retention = {}});
      const auto r = kpi::ResolveWindow("yesterday", m + 86400 + 11 * 3600, z.zone);  // the next day, late morning
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->start, m);
      auto a = q.Get({.kpi = "dau", .start = r->start, .end = r->end});
      ASSERT_TRUE(a.ok()) << a.status();
      EXPECT_EQ(*a->values[0].value, 3);  // u1, u5, u4
      EXPECT_FALSE(a->rounded);
      EXPECT_EQ(a->covered, *r);
    }
    std::filesystem::remove_all(dir);
  }
}

// Issue 14, item 4: a rolling window ending inside a bucket covers exactly
// the interval the answer reports, within half a bucket of the one asked.
TEST_F(QueryTest, RollingWindowsCoverWhatTheyReport) {
  const int64_t base = 1763856000;
  std::vector<CampaignEvent> evs;
  for (int i = 0; i < 3 * 3600; i += 7) evs.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, base + i, "search"));
  Apply(evs, 0);
  QueryService q = Service();
  for (int64_t end : {base + 3600 + 51 * 60 + 2, base + 7200 + 30, base + 7200 + 29, base + 3 * 3600 + 40}) {
    auto a = q.Get({.kpi = "imps", .start = end - 3600, .end = end});
    ASSERT_TRUE(a.ok()) << a.status();
    int64_t expected = 0;
    for (const auto& e : evs) {
      const int64_t s = e.event_time().seconds();
      expected += s >= a->covered.start && s < a->covered.end;
    }
    EXPECT_EQ(*a->values[0].value, expected) << end;
    EXPECT_LE(std::abs(a->covered.start - (end - 3600)), 30) << end;
    EXPECT_LE(std::abs(a->covered.end - end), 30) << end;
    EXPECT_EQ(a->rounded, a->covered.start != end - 3600 || a->covered.end != end);
  }
}

// Issue 14, item 10: a grouped answer lists every group the family's count
// and sum measures saw in the window; a count of nothing is 0.
TEST_F(QueryTest, GroupedCountsListTheGroupsRelatedKpisShow) {
  const int64_t day = 1763856000;
  Apply(
      {Ev(events::v1::CAMPAIGN_IMPRESSION, day + 10, "search"), Ev(events::v1::CAMPAIGN_IMPRESSION, day + 20, "video"),
       Ev(events::v1::CAMPAIGN_CLICK, day + 30, "search"), Ev(events::v1::CAMPAIGN_SPEND, day + 40, "display", 2)},
      0);
  QueryService q = Service();
  auto clicks = q.Get({.kpi = "clicks", .start = day, .end = day + 3600, .group_by = {"channel"}});
  ASSERT_TRUE(clicks.ok()) << clicks.status();
  auto ctr = q.Get({.kpi = "ctr", .start = day, .end = day + 3600, .group_by = {"channel"}});
  ASSERT_TRUE(ctr.ok());
  std::vector<std::string> groups, ctr_groups;
  for (const auto& gv : clicks->values) groups.push_back(gv.group[0].second);
  for (const auto& gv : ctr->values) ctr_groups.push_back(gv.group[0].second);
  EXPECT_EQ(groups, (std::vector<std::string>{"display", "search", "video"}));
  EXPECT_EQ(ctr_groups, groups);
  EXPECT_EQ(*clicks->values[0].value, 0);
  EXPECT_EQ(*clicks->values[1].value, 1);
  EXPECT_EQ(*clicks->values[2].value, 0);
  EXPECT_FALSE(ctr->values[0].value.has_value());  // no impressions on display: no ratio
  EXPECT_EQ(*ctr->values[2].value, 0);             // video: impressions, no clicks
}

// Issue 14, item 11: an answer too large for a client is refused with a
// message that says how to narrow it, not a transport error.
TEST_F(QueryTest, OversizedAnswersAreResourceExhausted) {
  const int64_t day = 1763856000;
  std::vector<CampaignEvent> evs;
  for (int i = 0; i < 2000; ++i) {
    evs.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, day + i, "ch-" + std::string(200, 'x') + std::to_string(i)));
  }
  Apply(evs, 0);
  QueryService small(catalog_, ids_, *source_, clock_, {.max_answer_bytes = 64 << 10, .retention = {}});
  auto a = small.Get({.kpi = "imps", .start = day, .end = day + 3600, .group_by = {"channel"}});
  ASSERT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted) << a.status();
  EXPECT_NE(std::string(a.status().message()).find("filter on a dimension"), std::string::npos);
  auto r = small.Range({.kpi = "imps", .start = day, .end = day + 3600, .group_by = {"channel"}}, 60);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_TRUE(small.Get({.kpi = "imps", .start = day, .end = day + 3600}).ok());
}

// A sum past the fixed-point range (state/aggregate.h) is an error that
// says what to do, never a wrapped number.
TEST_F(QueryTest, SumsPastTheExactRangeAreOutOfRangeNeverWrapped) {
  const int64_t day = 1763856000;
  Apply(
      {Ev(events::v1::CAMPAIGN_SPEND, day + 10, "search", 8e12),
       Ev(events::v1::CAMPAIGN_SPEND, day + 20, "search", 8e12), Ev(events::v1::CAMPAIGN_SPEND, day + 30, "social", 1)},
      0);
  QueryService q = Service();
  auto a = q.Get({.kpi = "spend", .start = day, .end = day + 3600});
  ASSERT_EQ(a.status().code(), absl::StatusCode::kOutOfRange) << a.status();
  EXPECT_NE(std::string(a.status().message()).find("measure spend"), std::string::npos) << a.status();
  // The group that stays in range still answers when asked alone.
  auto social = q.Get({.kpi = "spend", .start = day, .end = day + 3600, .filter = {{"channel", "social"}}});
  ASSERT_TRUE(social.ok()) << social.status();
  EXPECT_EQ(*social->values[0].value, 1);
}

// A measure whose stored shape changes (here its group_by) starts a new
// series: old partials are never read under the new dimensions (which would
// fail, or file values under the wrong names), and they are back when the
// change is reverted.
TEST_F(QueryTest, AMeasureWithANewShapeStartsANewSeries) {
  const int64_t day = 1763856000;
  Apply({Ev(events::v1::CAMPAIGN_IMPRESSION, day + 10, "search"),
         Ev(events::v1::CAMPAIGN_IMPRESSION, day + 20, "social")},
        0);
  const auto original = catalog_;
  auto regrouped = kpi::ParseCatalog(R"(
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [region]}
kpis:
  imps: {formula: impressions, unit: count}
)",
                                     "test.yaml");
  ASSERT_TRUE(regrouped.ok()) << regrouped.status();
  catalog_ = std::move(*regrouped);
  ids_ = *kpi::BindStateIds(catalog_, store_.get());
  ASSERT_EQ(ids_.reshaped.size(), 1u);
  EXPECT_NE(ids_.reshaped[0].find("count|region|60"), std::string::npos) << ids_.reshaped[0];
  {
    QueryService q = Service();
    auto a = q.Get({.kpi = "imps", .start = day, .end = day + 3600, .group_by = {"region"}});
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_TRUE(a->values.empty());  // nothing under the new shape yet
  }
  catalog_ = original;
  ids_ = *kpi::BindStateIds(catalog_, store_.get());
  EXPECT_TRUE(ids_.reshaped.empty());
  QueryService q = Service();
  auto a = q.Get({.kpi = "imps", .start = day, .end = day + 3600});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a->values[0].value, 2);
}

// The top groups by value and one "__other__" group for the rest: for any
// formula the groups add up to the whole, because the rest's partials are
// merged, not its values.
TEST_F(QueryTest, TopGroupsAndTheRestAsOtherAddUpToTheWhole) {
  const int64_t day = 1763856000;
  std::vector<CampaignEvent> evs;
  // Channel c<i>: i+1 clicks over 10*(i+1)+i impressions, for 8 channels.
  for (int i = 0; i < 8; ++i) {
    const std::string ch = "c" + std::to_string(i);
    for (int k = 0; k < i + 1; ++k) evs.push_back(Ev(events::v1::CAMPAIGN_CLICK, day + 100 + k, ch));
    for (int k = 0; k < 10 * (i + 1) + i; ++k) evs.push_back(Ev(events::v1::CAMPAIGN_IMPRESSION, day + 200 + k, ch));
  }
  Apply(evs, 0);
  QueryService q = Service();
  KpiQuery all{.kpi = "ctr", .start = day, .end = day + 3600};
  const double whole = *q.Get(all)->values[0].value;
  KpiQuery top = all;
  top.group_by = {"channel"};
  top.top = 3;
  auto a = q.Get(top);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->values.size(), 4u);
  std::map<std::string, double> v;
  double clicks = 0, imps = 0;
  for (const auto& g : a->values) {
    v[g.group[0].second] = *g.value;
    ASSERT_EQ(g.inputs.size(), 2u);
    clicks += *g.inputs[0];
    imps += *g.inputs[1];
  }
  // CTR (i+1)/(11i+10) falls with i: the top 3 by value are c0, c1, c2.
  EXPECT_TRUE(v.count("c0") && v.count("c1") && v.count("c2")) << a->values.size();
  // __other__ is the ratio of the rest's sums, not a sum of ratios.
  double oc = 0, oi = 0;
  for (int i = 3; i < 8; ++i) {
    oc += i + 1;
    oi += 10 * (i + 1) + i;
  }
  EXPECT_DOUBLE_EQ(v.at("__other__"), oc / oi);
  EXPECT_DOUBLE_EQ(clicks / imps, whole);
  // Ascending: the lowest CTRs.
  top.top_ascending = true;
  a = q.Get(top);
  ASSERT_TRUE(a.ok());
  std::set<std::string> names;
  for (const auto& g : a->values) names.insert(g.group[0].second);
  EXPECT_EQ(names, (std::set<std::string>{"c5", "c6", "c7", "__other__"}));
  // No more groups than asked: no __other__.
  top.top = 20;
  EXPECT_EQ(q.Get(top)->values.size(), 8u);
}

}  // namespace
}  // namespace kpistream::query
