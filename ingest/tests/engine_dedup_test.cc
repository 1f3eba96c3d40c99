// Event-id de-duplication through the whole engine: librdkafka's mock
// cluster (a fast unit test; the real broker runs it in tests/pipeline_it.cc)
// and a real RocksDB store that outlives the engine across a restart.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "google/protobuf/util/time_util.h"
#include "ingest/engine.h"
#include "kpistream/events/v1/events.pb.h"
#include "state/store.h"

namespace kpistream::ingest {
namespace {

using events::v1::CampaignEvent;

constexpr int64_t kT0 = 1767225600000;  // 2026-01-01
constexpr int64_t kMinute = 60000;

class EngineDedupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_dedup_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    ASSERT_EQ(rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof(err)), RD_KAFKA_CONF_OK);
    ASSERT_EQ(rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)), RD_KAFKA_CONF_OK);
    producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    ASSERT_NE(producer_, nullptr) << err;
    auto* cluster = rd_kafka_handle_mock_cluster(producer_);
    ASSERT_NE(cluster, nullptr);
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster, "t.campaign", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster, "kpistream.dlq", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    bootstrap_ = rd_kafka_mock_cluster_bootstraps(cluster);

    auto cat = kpi::ParseCatalog(R"(
measures:
  spend: {family: campaign, types: [spend], aggregation: sum, field: cost}
kpis:
  spend: {formula: spend, unit: currency}
)",
                                 "test.yaml");
    ASSERT_TRUE(cat.ok()) << cat.status();
    catalog_ = std::move(*cat);
    OpenStore();
  }
  void TearDown() override {
    store_.reset();
    if (producer_) rd_kafka_destroy(producer_);
    std::filesystem::remove_all(dir_);
  }

  void OpenStore() {
    auto store = state::Store::Open({.path = dir_.string(), .retention_fine_s = 0, .retention_hour_s = 0});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void Produce(const std::string& id, int64_t time_ms, double cost) {
    CampaignEvent e;
    e.set_event_id(id);
    *e.mutable_event_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(time_ms);
    e.set_type(events::v1::CAMPAIGN_SPEND);
    e.set_campaign_id("c1");
    e.set_cost(cost);
    const std::string payload = e.SerializeAsString();
    ASSERT_EQ(rd_kafka_producev(producer_, RD_KAFKA_V_TOPIC("t.campaign"), RD_KAFKA_V_PARTITION(0),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
    ++produced_;
  }

  // Runs an engine until it has consumed everything produced so far, then
  // stops it (a clean stop: final commit). Returns its probe's counters.
  struct Counts {
    uint64_t applied = 0, duplicate = 0, late = 0;
  };
  Counts RunEngine(int64_t dedup_window_ms) {
    EXPECT_EQ(rd_kafka_flush(producer_, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    EngineOptions o;
    o.brokers = bootstrap_;
    // A fresh group per run: the mock cluster holds a stopped member's
    // session, and kpid takes its positions from the store anyway.
    o.group_id = "dedup-test-" + std::to_string(++runs_);
    o.topics = {{"t.campaign", kpi::Family::kCampaign, PayloadFormat::kProtobuf}};
    o.commit_interval_ms = 50;
    o.dedup_window_ms = dedup_window_ms;
    auto ids = kpi::BindStateIds(catalog_, store_.get());
    EXPECT_TRUE(ids.ok()) << ids.status();
    ids_ = *ids;
    auto engine = Engine::Create(o, catalog_, ids_, store_.get());
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return {};
    EXPECT_TRUE((*engine)->Start().ok());
    const auto& p = (*engine)->probe();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (p.ingest.consumed.load() < produced_ - consumed_before_ && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    (*engine)->Stop();
    consumed_before_ = produced_;
    return {p.ingest.applied.load(), p.ingest.rejected[static_cast<int>(RejectReason::kDuplicate)].load(),
            p.ingest.rejected[static_cast<int>(RejectReason::kLate)].load()};
  }

  double SpendTotal() {
    double total = 0;
    auto id = store_->IdFor("measure", "spend");
    EXPECT_TRUE(id.ok());
    auto st = store_->Scan(state::Tier::kDay, *id, state::SourceId(*store_->IdFor("topic", "t.campaign"), 0),
                           std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                           [&](int64_t, std::string_view, std::string_view enc) {
                             state::Agg a;
                             ASSERT_TRUE(state::DecodeAgg(enc, &a));
                             total += a.sum();
                           });
    EXPECT_TRUE(st.ok()) << st;
    return total;
  }

  std::filesystem::path dir_;
  rd_kafka_t* producer_ = nullptr;
  std::string bootstrap_;
  kpi::Catalog catalog_;
  kpi::StateIds ids_;
  std::unique_ptr<state::Store> store_;
  uint64_t produced_ = 0, consumed_before_ = 0;
  int runs_ = 0;
};

TEST_F(EngineDedupTest, RepeatedIdsAreRejectedInABatchAcrossCommitsAndRestartsWithinTheWindow) {
  for (int i = 0; i < 10; ++i) Produce("e-" + std::to_string(i), kT0 + i * kMinute, 1.0 + i);
  Produce("e-3", kT0 + 3 * kMinute, 4.0);   // a producer retry: same id, same content
  Produce("e-9", kT0 + 9 * kMinute, 99.0);  // same id, other content: still the same event
  auto c = RunEngine(3600 * 1000);
  EXPECT_EQ(c.applied, 10u);
  EXPECT_EQ(c.duplicate, 2u);
  EXPECT_DOUBLE_EQ(SpendTotal(), 55.0);  // 1 + 2 + ... + 10
  auto seen = store_->LookupEventId(state::SourceId(*store_->IdFor("topic", "t.campaign"), 0), "e-3");
  ASSERT_TRUE(seen.ok());
  ASSERT_TRUE(seen->has_value());
  EXPECT_EQ((*seen)->offset, 3);
  EXPECT_EQ((*seen)->event_ms, kT0 + 3 * kMinute);

  // A restart on the same state: the committed ids are remembered.
  store_.reset();
  OpenStore();
  Produce("e-7", kT0 + 7 * kMinute, 8.0);
  Produce("e-10", kT0 + 10 * kMinute, 11.0);
  // The partition moves 2 h on: e-0 is now behind the 1 h window and the
  // 1 h lateness. Its id is ignored, and the event is late, not a duplicate.
  Produce("e-11", kT0 + 2 * 3600 * 1000, 12.0);
  Produce("e-0", kT0, 1.0);
  c = RunEngine(3600 * 1000);
  EXPECT_EQ(c.applied, 2u);
  EXPECT_EQ(c.duplicate, 1u);
  EXPECT_EQ(c.late, 1u);
  EXPECT_DOUBLE_EQ(SpendTotal(), 78.0);
}

TEST_F(EngineDedupTest, OffCountsEveryRecord) {
  Produce("e-0", kT0, 1.0);
  Produce("e-0", kT0, 1.0);
  auto c = RunEngine(0);
  EXPECT_EQ(c.applied, 2u);
  EXPECT_EQ(c.duplicate, 0u);
  EXPECT_DOUBLE_EQ(SpendTotal(), 2.0);
}

TEST(StoreEventIdTest, CompactionDropsIdsBehindTheHorizonOnly) {
  const auto dir = std::filesystem::temp_directory_path() / ("kpistream_eventid_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    auto store = state::Store::Open({.path = dir.string()});
    ASSERT_TRUE(store.ok());
    state::WriteBatch b(**store);
    b.PutEventId(7, "old", 1000, 0);
    b.PutEventId(7, "new", 5000, 1);
    b.PutEventId(8, "other-source", 1000, 0);
    ASSERT_TRUE((*store)->Commit(&b).ok());
    (*store)->SetEventIdHorizon(7, 2000);
    ASSERT_TRUE((*store)->CompactForTest().ok());
    EXPECT_FALSE((*store)->LookupEventId(7, "old")->has_value());
    EXPECT_TRUE((*store)->LookupEventId(7, "new")->has_value());
    EXPECT_TRUE((*store)->LookupEventId(8, "other-source")->has_value());  // no horizon set: kept
    EXPECT_FALSE((*store)->LookupEventId(8, "old")->has_value());
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kpistream::ingest
