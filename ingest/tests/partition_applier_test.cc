// The per-record step on a real RocksDB store, with a fake clock: event-time
// hygiene (future events, a watermark stamped in the future), dead-letter
// reasons, attribution to another timestamp, bounded dimension values and
// the caps shared by a KPI's measures.
#include "ingest/partition_applier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "google/protobuf/util/time_util.h"
#include "ingest/local_ingest.h"
#include "kpistream/events/v1/events.pb.h"
#include "query/query.h"
#include "state/keys.h"

namespace kpistream::ingest {
namespace {

using events::v1::CampaignEvent;
using events::v1::CrmEvent;
using google::protobuf::util::TimeUtil;
using Outcome = PartitionApplier::Outcome;

constexpr int64_t kNow = 1764460800000;  // 2025-11-30T00:00:00Z
constexpr int64_t kSec = 1000;

class PartitionApplierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_applier_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    Load(R"(
max_dimension_bytes: 64
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel, campaign_id],
                max_groups: 3}
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel, campaign_id]}
  trials: {family: crm, types: [trial_started], aggregation: count}
  converted_by_start: {family: crm, types: [trial_converted], time: origin_time, aggregation: count}
kpis:
  impressions: {formula: impressions, unit: count, windows: [1h]}
  ctr: {formula: clicks / impressions, windows: [1h]}
  trial_to_paid: {formula: converted_by_start / trials, windows: [1h]}
  conversions_by_start: {formula: converted_by_start, unit: count, windows: [1h]}
)");
  }
  void TearDown() override {
    ingest_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Load(const std::string& yaml) {
    auto c = kpi::ParseCatalog(yaml, "t.yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = std::move(*c);
    Reopen();
  }
  // A fresh process on the same state (a restart).
  void Reopen() {
    ingest_.reset();
    store_.reset();
    auto s = state::Store::Open({.path = dir_.string(), .retention_fine_s = 0, .retention_hour_s = 0});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    ids_ = *kpi::BindStateIds(catalog_, store_.get());
    ingest_ = std::make_unique<LocalIngest>(catalog_, ids_, store_.get(), ApplierOptions{}, clock_);
  }
  Outcome Impression(int64_t time_ms, const std::string& channel = "search", const std::string& campaign = "c1",
                     PartitionApplier::Rejection* rej = nullptr, bool click = false) {
    CampaignEvent e;
    e.set_event_id("e" + std::to_string(++n_));
    *e.mutable_event_time() = TimeUtil::MillisecondsToTimestamp(time_ms);
    e.set_type(click ? events::v1::CAMPAIGN_CLICK : events::v1::CAMPAIGN_IMPRESSION);
    e.set_channel(channel);
    e.set_campaign_id(campaign);
    return Apply(kpi::Family::kCampaign, e.SerializeAsString(), rej);
  }
  Outcome Apply(kpi::Family f, const std::string& payload, PartitionApplier::Rejection* rej = nullptr) {
    auto o = ingest_->Apply(f == kpi::Family::kCampaign ? 1 : 3, 0, f, payload, PayloadFormat::kAuto, rej);
    EXPECT_TRUE(o.ok()) << o.status();
    return o.ok() ? *o : Outcome::kUnknown;
  }
  query::KpiAnswer Get(const std::string& kpi, int64_t start_ms, int64_t end_ms,
                       std::vector<std::string> group_by = {}) {
    EXPECT_TRUE(ingest_->Commit().ok());
    query::LocalPartialSource source(*store_);
    query::QueryService q(catalog_, ids_, source, clock_, {.retention = {}});
    auto a = q.Get({.kpi = kpi, .start = start_ms / 1000, .end = end_ms / 1000, .group_by = std::move(group_by)});
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : query::KpiAnswer{};
  }
  double Value(const std::string& kpi, int64_t start_ms, int64_t end_ms) {
    const auto a = Get(kpi, start_ms, end_ms);
    return a.values.size() == 1 && a.values[0].value ? *a.values[0].value : -1;
  }

  std::filesystem::path dir_;
  state::FakeClock clock_{kNow};
  kpi::Catalog catalog_;
  kpi::StateIds ids_;
  std::unique_ptr<state::Store> store_;
  std::unique_ptr<LocalIngest> ingest_;
  int n_ = 0;
};

// Issue 14, item 1: one event stamped 40 days ahead must not make the
// events after it late. Right: 10, then 13 after a restart.
TEST_F(PartitionApplierTest, AnEventFromTheFutureIsRefusedAndMovesNothing) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Impression(kNow - (60 - i) * kSec), Outcome::kApplied);
  PartitionApplier::Rejection rej;
  EXPECT_EQ(Impression(kNow + 40 * 86400 * kSec, "search", "c1", &rej), Outcome::kRejected);
  EXPECT_EQ(rej.reason, RejectReason::kFuture);
  EXPECT_NE(rej.detail.find("ahead of kpid's clock"), std::string::npos) << rej.detail;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Impression(kNow - (30 - i) * kSec), Outcome::kApplied);
  EXPECT_EQ(Value("impressions", kNow - 3600 * kSec, kNow), 10);
  EXPECT_EQ(ingest_->stats().rejected[static_cast<int>(RejectReason::kFuture)].load(), 1u);
  Reopen();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Impression(kNow - (20 - i) * kSec), Outcome::kApplied);
  EXPECT_EQ(Value("impressions", kNow - 3600 * kSec, kNow), 13);
  // Within max_future (10 minutes) an event is applied: clocks are a little
  // off everywhere.
  EXPECT_EQ(Impression(kNow + 9 * 60 * kSec), Outcome::kApplied);
}

// A partition whose committed watermark was stamped in the future before
// kpid refused such events: reset at restore, so on-time events apply.
TEST_F(PartitionApplierTest, AWatermarkStampedInTheFutureIsResetAtRestart) {
  state::WriteBatch b(*store_);
  b.PutOffset(state::SourceId(1, 0), 7, kNow + 40 * 86400 * kSec);
  ASSERT_TRUE(store_->Commit(&b).ok());
  Reopen();
  EXPECT_EQ(Impression(kNow - 30 * kSec), Outcome::kApplied);
  EXPECT_EQ(ingest_->stats().watermarks_reset.load(), 1u);
  EXPECT_EQ(Value("impressions", kNow - 3600 * kSec, kNow), 1);
  auto pos = store_->ReadOffset(state::SourceId(1, 0));
  ASSERT_TRUE(pos.ok() && pos->has_value());
  EXPECT_LE((*pos)->newest_event_ms, kNow);  // rewritten with the commit
}

// Issue 14, item 13: the reason says what happened.
TEST_F(PartitionApplierTest, DeadLetterReasonsSayWhatHappened) {
  PartitionApplier::Rejection rej;
  EXPECT_EQ(Apply(kpi::Family::kCampaign, "", &rej), Outcome::kRejected);
  EXPECT_EQ(rej.reason, RejectReason::kEmpty);  // an empty record or a tombstone
  for (const char* time : {"yesterday", "2026-13-45T99:00:00Z", "12345"}) {
    const std::string json = std::string(R"({"eventId":"x","eventTime":")") + time + R"(","type":"CAMPAIGN_CLICK"})";
    EXPECT_EQ(Apply(kpi::Family::kCampaign, json, &rej), Outcome::kRejected) << time;
    EXPECT_EQ(rej.reason, RejectReason::kBadTimestamp) << time << ": " << rej.detail;
  }
  EXPECT_EQ(Apply(kpi::Family::kCampaign, R"({"eventId":"x","eventTime":"2025-11-30T00:00:00Z","type":"CAMPAIGN_CLICK",
    "cost":"lots"})",
                  &rej),
            Outcome::kRejected);
  EXPECT_EQ(rej.reason, RejectReason::kBadJson);
}

// Issue 14, item 9: the measures of a KPI agree on the groups they keep; only
// the overflowing dimension collapses.
TEST_F(PartitionApplierTest, TheMeasuresOfAKpiKeepTheSameGroups) {
  const int64_t t = kNow - 600 * kSec;
  // Impressions see campaigns c1..c5 first: c1..c3 are kept (max_groups 3),
  // c4 and c5 go to __other__ for impressions and clicks alike.
  for (int c = 1; c <= 5; ++c) Impression(t, "search", "c" + std::to_string(c));
  for (int c = 1; c <= 5; ++c) Impression(t, "search", "c" + std::to_string(c), nullptr, /*click=*/true);
  auto a = Get("ctr", t - 1000, kNow, {"campaign_id"});
  ASSERT_EQ(a.values.size(), 4u);
  for (const auto& gv : a.values) {
    ASSERT_TRUE(gv.value) << gv.group[0].second;
    EXPECT_EQ(*gv.value, 1.0) << gv.group[0].second;  // every group: as many clicks as impressions
  }
  EXPECT_EQ(a.values[0].group[0].second, "__other__");  // sorted by value: '_' < 'c'
  EXPECT_EQ(a.values[3].group[0].second, "c3");
  // Grouped by the channel, nothing overflowed.
  a = Get("ctr", t - 1000, kNow, {"channel"});
  ASSERT_EQ(a.values.size(), 1u);
  EXPECT_EQ(a.values[0].group[0].second, "search");
  EXPECT_EQ(*a.values[0].value, 1.0);
  const auto& campaign = catalog_.dimensions[1];
  ASSERT_EQ(campaign.name, "campaign_id");
  EXPECT_EQ(ingest_->stats().overflow_by_dimension[1].load(), 4u);
}

// Issue 14, item 11: a dimension value is bounded at ingest, and distinct
// long values stay distinct.
TEST_F(PartitionApplierTest, LongDimensionValuesAreCutAndStayDistinct) {
  const std::string a(900000, 'a'), b = std::string(899999, 'a') + "b";
  Impression(kNow - 60 * kSec, "search", a);
  Impression(kNow - 60 * kSec, "search", b);
  const auto answer = Get("impressions", kNow - 3600 * kSec, kNow, {"campaign_id"});
  ASSERT_EQ(answer.values.size(), 2u);
  for (const auto& gv : answer.values) {
    EXPECT_EQ(gv.group[0].second.size(), 64u);
    EXPECT_EQ(*gv.value, 1);
  }
  EXPECT_NE(answer.values[0].group[0].second, answer.values[1].group[0].second);
  EXPECT_EQ(ingest_->stats().cut_by_dimension[1].load(), 2u);
  EXPECT_EQ(CutDimensionValue(a, 64), CutDimensionValue(a, 64));
}

// A cut never splits a UTF-8 character (a valid value stays a valid label
// value) and never exceeds the limit, at every limit from the smallest.
TEST(CutDimensionValueTest, KeepsUtf8AndTheLimit) {
  std::string v;
  for (int i = 0; i < 100; ++i) v += i % 3 == 0 ? "\xc3\xa9" : (i % 3 == 1 ? "\xe2\x82\xac" : "\xf0\x9f\x98\x80");
  for (size_t max = kpi::kMinDimensionBytes; max < 80; ++max) {
    const auto cut = CutDimensionValue(v, max);
    EXPECT_LE(cut.size(), max);
    EXPECT_GE(cut.size(), max - 3);  // backs off at most a 4-byte character's tail
    const size_t kept = cut.size() - 17;
    EXPECT_EQ(cut.substr(0, kept), v.substr(0, kept));
    EXPECT_NE(static_cast<unsigned char>(v[kept]) & 0xC0, 0x80) << max << ": a character was split";
  }
  // Limits below the suffix never underflow: the hash alone.
  EXPECT_EQ(CutDimensionValue(v, 3).size(), 17u);
}

// Issue 14, item 12: a measure filed under another timestamp of the event
// makes a cohort rate.
TEST_F(PartitionApplierTest, ACohortMeasureIsFiledUnderTheOriginTime) {
  auto crm = [&](events::v1::CrmEventType type, int64_t t, std::optional<int64_t> origin) {
    CrmEvent e;
    e.set_event_id("c" + std::to_string(++n_));
    *e.mutable_event_time() = TimeUtil::MillisecondsToTimestamp(t);
    e.set_type(type);
    if (origin) *e.mutable_origin_time() = TimeUtil::MillisecondsToTimestamp(*origin);
    return Apply(kpi::Family::kCrm, e.SerializeAsString());
  };
  const int64_t day = 86400 * kSec;
  // Four trials started two days ago; three convert today, one of them
  // attributed to a trial started last week.
  for (int i = 0; i < 4; ++i) crm(events::v1::CRM_TRIAL_STARTED, kNow - 2 * day + i * kSec, std::nullopt);
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 100 * kSec, kNow - 2 * day);
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 90 * kSec, kNow - 2 * day + kSec);
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 80 * kSec, kNow - 7 * day);
  // Of the trials started two days ago (that hour), 2 of 4 converted.
  EXPECT_EQ(Value("trial_to_paid", kNow - 2 * day, kNow - 2 * day + 3600 * kSec), 0.5);
  // Today: no trial started, three conversions: no cohort rate.
  EXPECT_EQ(Value("trial_to_paid", kNow - 3600 * kSec, kNow), -1);
  // Without an origin time, the event is filed under its event time, counted.
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 70 * kSec, std::nullopt);
  EXPECT_EQ(ingest_->stats().time_fallback_by_measure[3].load(), 1u);
  // An origin after the event itself (a year ahead, or a second) is not an
  // attribution: filed under the event time, counted, never a future bucket.
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 60 * kSec, kNow + 365 * day);
  crm(events::v1::CRM_TRIAL_CONVERTED, kNow - 50 * kSec, kNow - 49 * kSec);
  EXPECT_EQ(ingest_->stats().time_fallback_by_measure[3].load(), 3u);
  // An origin whose seconds no millisecond count can hold (protobuf takes
  // any int64): out of range, a fallback, and no overflow on the way.
  {
    CrmEvent e;
    e.set_event_id("c" + std::to_string(++n_));
    *e.mutable_event_time() = TimeUtil::MillisecondsToTimestamp(kNow - 40 * kSec);
    e.set_type(events::v1::CRM_TRIAL_CONVERTED);
    e.mutable_origin_time()->set_seconds(INT64_MAX);
    EXPECT_EQ(Apply(kpi::Family::kCrm, e.SerializeAsString()), Outcome::kApplied);
  }
  EXPECT_EQ(ingest_->stats().time_fallback_by_measure[3].load(), 4u);
  // Filed in the last hour: the four fallbacks (the others lie days back).
  EXPECT_EQ(Value("conversions_by_start", kNow - 3600 * kSec, kNow), 4);
}

}  // namespace
}  // namespace kpistream::ingest
