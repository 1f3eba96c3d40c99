// Cluster-wide answers (services/cluster.h) over real gRPC on loopback:
// replicas with their own stores, each owning some partitions, and one
// answering for all of them.
#include "services/cluster.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "ingest/local_ingest.h"
#include "kpistream/events/v1/events.pb.h"
#include "kpistream/v1/kpi.grpc.pb.h"
#include "services/grpc_auth.h"
#include "services/grpc_server.h"
#include "services/kpi_answers.h"
#include "state/keys.h"

namespace kpistream::services {
namespace {

using events::v1::CampaignEvent;
using Steady = std::chrono::steady_clock;

constexpr int64_t kDay = 1763856000;  // a UTC midnight
constexpr uint32_t kTopic = 1;        // the stream id every replica gives the topic here
constexpr int kPartitions = 4;

const char* kCatalog = R"(
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel]}
  spend: {family: campaign, types: [spend], aggregation: sum, field: cost, group_by: [channel]}
  users: {family: campaign, aggregation: distinct, field: user_id, bucket: 1h}
kpis:
  imps: {formula: impressions, unit: count}
  spend: {formula: spend, unit: currency}
  cpm: {formula: spend / impressions * 1000}
  users: {formula: users, unit: count}
)";

std::string Name(int partition) { return fmt::format("campaign[{}]", partition); }

// One replica: a store, the partitions it owns, and its gRPC server
// (KpiService and the partials its peers read).
struct Replica {
  std::string id;
  std::filesystem::path dir;
  kpi::Catalog catalog;
  kpi::StateIds ids;
  std::unique_ptr<state::Store> store;
  std::unique_ptr<ingest::LocalIngest> ingest;
  std::set<int> owned;
  std::atomic<uint64_t> epoch{1};
  std::mutex mu;  // owned
  std::unique_ptr<query::LocalPartialSource> source;
  std::unique_ptr<query::QueryService> queries;
  std::unique_ptr<GrpcServer> server;

  void Own(std::set<int> partitions) {
    std::lock_guard<std::mutex> l(mu);
    owned = std::move(partitions);
    ++epoch;
  }
  query::Ownership Ownership() {
    std::lock_guard<std::mutex> l(mu);
    query::Ownership o;
    for (int p = 0; p < kPartitions; ++p) {
      if (owned.count(p)) {
        o.sources.push_back(state::SourceId(kTopic, p));
        o.names.push_back(Name(p));
      } else {
        o.missing.push_back(Name(p));
      }
    }
    return o;
  }
};

class ClusterTest : public ::testing::Test {
 protected:
  void TearDown() override {
    cluster_queries_.reset();
    cluster_.reset();
    for (auto& r : replicas_) {
      if (r->server) r->server->Shutdown();
      r->server.reset();
      r->queries.reset();
      r->ingest.reset();
      r->store.reset();
      std::filesystem::remove_all(r->dir);
    }
  }

  Replica& Add(const std::string& id, std::set<int> owned, const char* catalog_text = kCatalog,
               TokenAuthenticator* auth = nullptr) {
    auto r = std::make_unique<Replica>();
    r->id = id;
    r->dir = std::filesystem::temp_directory_path() / fmt::format("kpistream_cluster_test_{}_{}", ::getpid(), id);
    std::filesystem::remove_all(r->dir);
    r->catalog = *kpi::ParseCatalog(catalog_text, "test.yaml");
    auto store = state::Store::Open({.path = r->dir.string(), .retention_fine_s = 0, .retention_hour_s = 0});
    EXPECT_TRUE(store.ok()) << store.status();
    r->store = std::move(*store);
    r->ids = *kpi::BindStateIds(r->catalog, r->store.get());
    r->ingest =
        std::make_unique<ingest::LocalIngest>(r->catalog, r->ids, r->store.get(), ingest::ApplierOptions{}, clock_);
    r->owned = std::move(owned);
    Replica* raw = r.get();
    r->source = std::make_unique<query::LocalPartialSource>(
        *r->store, [raw] { return raw->Ownership(); }, [raw] { return raw->epoch.load(); });
    r->queries = std::make_unique<query::QueryService>(r->catalog, r->ids, *r->source, clock_,
                                                       query::QueryOptions{.retention = {}});
    auto server = GrpcServer::Start(
        {.listen = "127.0.0.1:0", .alerts = false, .auth = auth, .replica_id = id},
        [raw] {
          ServingView v{.catalog = &raw->catalog, .queries = raw->queries.get()};
          v.partials = raw->source.get();
          v.ids = &raw->ids;
          return v;
        },
        clock_);
    EXPECT_TRUE(server.ok()) << server.status();
    r->server = std::move(*server);
    replicas_.push_back(std::move(r));
    return *replicas_.back();
  }

  // n impressions (and spends of 0.25, and users) on a partition of a replica.
  void Apply(Replica& r, int partition, int n, int64_t start = kDay) {
    for (int i = 0; i < n; ++i) {
      for (auto type : {events::v1::CAMPAIGN_IMPRESSION, events::v1::CAMPAIGN_SPEND}) {
        CampaignEvent e;
        e.set_event_id(fmt::format("{}-{}-{}-{}", r.id, partition, i, static_cast<int>(type)));
        e.set_type(type);
        e.mutable_event_time()->set_seconds(start + i * 60);
        e.set_channel(i % 3 ? "search" : "social");
        e.set_cost(type == events::v1::CAMPAIGN_SPEND ? 0.25 : 0);
        e.set_user_id(fmt::format("u{}-{}", partition, i % 50));
        auto o = r.ingest->Apply(kTopic, partition, kpi::Family::kCampaign, e.SerializeAsString());
        ASSERT_TRUE(o.ok()) << o.status();
      }
    }
    ASSERT_TRUE(r.ingest->Commit().ok());
  }

  // The cluster-wide source of replica `me`, reading `peers`.
  void Coordinate(Replica& me, std::vector<std::string> peers, ClusterOptions extra = {}) {
    extra.peers = std::move(peers);
    extra.replica_id = me.id;
    auto c = ClusterPartialSource::Create(extra, *me.source, me.catalog, me.ids);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    cluster_queries_ = std::make_unique<query::QueryService>(me.catalog, me.ids, *cluster_, clock_,
                                                             query::QueryOptions{.retention = {}});
  }

  absl::StatusOr<query::KpiAnswer> Get(const std::string& kpi, std::vector<std::string> group_by = {}) {
    return cluster_queries_->Get({.kpi = kpi, .start = kDay, .end = kDay + 2 * 86400, .group_by = group_by});
  }

  static double Value(const query::KpiAnswer& a) { return a.values.size() == 1 ? a.values[0].value.value_or(-1) : -1; }

  state::FakeClock clock_{(kDay + 20 * 86400) * 1000LL};
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::unique_ptr<ClusterPartialSource> cluster_;
  std::unique_ptr<query::QueryService> cluster_queries_;
};

TEST_F(ClusterTest, EveryReplicasPartitionsAreMergedOnceWithTheirOwners) {
  auto& a = Add("a", {0, 1});
  auto& b = Add("b", {2});
  auto& c = Add("c", {3});
  Apply(a, 0, 100);
  Apply(a, 1, 200);
  Apply(b, 2, 300);
  Apply(c, 3, 400);
  // a's own address is listed too, as a headless Service's DNS lists it.
  Coordinate(a, {a.server->address(), b.server->address(), c.server->address()});
  auto imps = Get("imps");
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 1000);
  EXPECT_TRUE(imps->missing_partitions.empty());
  ASSERT_EQ(imps->positions.size(), 4u);
  EXPECT_EQ(ConsistencyToken(imps->positions),
            "campaign[0]@a=200,campaign[1]@a=400,campaign[2]@b=600,campaign[3]@c=800");
  auto spend = Get("spend");
  ASSERT_TRUE(spend.ok()) << spend.status();
  EXPECT_DOUBLE_EQ(Value(*spend), 250);
  auto cpm = Get("cpm", {"channel"});
  ASSERT_TRUE(cpm.ok()) << cpm.status();
  ASSERT_EQ(cpm->values.size(), 2u);
  for (const auto& g : cpm->values) EXPECT_DOUBLE_EQ(*g.value, 250) << g.group[0].second;
  // Distinct users: sketches merge across replicas (50 users per partition).
  auto users = Get("users");
  ASSERT_TRUE(users.ok()) << users.status();
  EXPECT_NEAR(Value(*users), 200, 200 * 0.03);
  // A range (hourly points) reads each peer once (Prefetch) and adds up to the same.
  auto range = cluster_queries_->Range({.kpi = "imps", .start = kDay, .end = kDay + 86400}, 3600);
  ASSERT_TRUE(range.ok()) << range.status();
  ASSERT_EQ(range->series.size(), 1u);
  double sum = 0;
  for (const auto& p : range->series[0].points) sum += p.value.value_or(0);
  EXPECT_EQ(sum, 1000);
  // The whole batch from one snapshot.
  auto batch = cluster_queries_->GetBatch({{.kpi = "imps", .start = kDay, .end = kDay + 2 * 86400},
                                           {.kpi = "spend", .start = kDay, .end = kDay + 2 * 86400}});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(Value(*(*batch)[0]), 1000);
  EXPECT_DOUBLE_EQ(Value(*(*batch)[1]), 250);
  EXPECT_EQ(cluster_->stats().peer_failures.load(), 0u);
}

TEST_F(ClusterTest, APartitionTwoReplicasClaimIsReadOnceFromTheOneFurtherAhead) {
  auto& a = Add("a", {0, 1});
  auto& b = Add("b", {1, 2, 3});
  Apply(a, 0, 10);
  Apply(a, 1, 50);  // a's copy of partition 1 is behind (a warm copy, its revocation not yet published)
  Apply(b, 1, 70);  // b's, further ahead: the one read
  Apply(b, 2, 100);
  Apply(b, 3, 1000);
  Coordinate(a, {b.server->address()});
  auto imps = Get("imps");
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 10 + 70 + 100 + 1000);
  EXPECT_EQ(ConsistencyToken(imps->positions),
            "campaign[0]@a=20,campaign[1]@b=140,campaign[2]@b=200,campaign[3]@b=2000");
  // The other way round: a's copy further ahead; a tie goes to the asker.
  Apply(a, 1, 20, kDay + 86400);  // 50 + 20 = 70 events (140 records, offsets): a tie
  imps = Get("imps");
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 10 + 70 + 100 + 1000);
  EXPECT_NE(ConsistencyToken(imps->positions).find("campaign[1]@a=140"), std::string::npos);
}

TEST_F(ClusterTest, APartitionNobodyHoldsIsWaitedForABoundedTimeThenListed) {
  auto& a = Add("a", {0, 1});
  auto& b = Add("b", {2, 3});
  Apply(a, 0, 10);
  Apply(a, 1, 20);
  Apply(b, 2, 30);
  Apply(b, 3, 40);
  constexpr int kMaxWaitMs = 2000;
  Coordinate(a, {b.server->address()}, {.max_wait_ms = kMaxWaitMs});
  // A rebalance: b gives partition 3 up; a takes it (restored) once the
  // answer asked meanwhile is waiting for it. That answer is complete.
  b.Own({2});
  Apply(a, 3, 40);
  std::thread takeover([&] {
    const auto give_up = Steady::now() + std::chrono::seconds(10);  // the answer never waited: it fails below
    while (cluster_->stats().waits.load() == 0 && Steady::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    a.Own({0, 1, 3});
  });
  auto imps = Get("imps");
  takeover.join();
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 100);
  EXPECT_TRUE(imps->missing_partitions.empty());
  EXPECT_GT(cluster_->stats().waits.load(), 0u);
  // b goes away: after the bounded wait its partition is listed, never
  // silently left out; an answer right after does not wait again.
  b.server->Shutdown();
  const auto t0 = Steady::now();
  auto partial = Get("spend");
  const auto waited = Steady::now() - t0;
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->missing_partitions, std::vector<std::string>{Name(2)});
  EXPECT_DOUBLE_EQ(Value(*partial), (10 + 20 + 40) * 0.25);
  EXPECT_GE(waited, std::chrono::milliseconds(kMaxWaitMs));
  const auto t1 = Steady::now();
  auto again = Get("imps");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->missing_partitions, std::vector<std::string>{Name(2)});
  EXPECT_LT(Steady::now() - t1, std::chrono::milliseconds(kMaxWaitMs / 2));
  EXPECT_GT(cluster_->stats().incomplete.load(), 0u);
}

TEST_F(ClusterTest, APeerOnAnotherCatalogRefusesInsteadOfAnsweringWrongly) {
  auto& a = Add("a", {0, 1});
  std::string other = kCatalog;
  const std::string from = "group_by: [channel]}";
  other.replace(other.find(from), from.size(), "group_by: []}");  // impressions reshaped
  auto& b = Add("b", {2, 3}, other.c_str());
  Apply(a, 0, 10);
  Apply(b, 2, 10);
  Coordinate(a, {b.server->address()});
  auto imps = Get("imps");
  ASSERT_FALSE(imps.ok());
  EXPECT_EQ(imps.status().code(), absl::StatusCode::kFailedPrecondition) << imps.status();
  EXPECT_NE(imps.status().message().find("impressions"), std::string::npos) << imps.status();
}

TEST_F(ClusterTest, PeersNeedTheReadScopeAndGetItFromTheTokenFile) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("kpistream_cluster_tokens_{}", ::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "tokens.yaml") << "tokens:\n  - {name: peers, token: s3cret-peer-token, scopes: [read]}\n";
    std::ofstream(dir / "peer-token") << "s3cret-peer-token\n";
    std::ofstream(dir / "wrong-token") << "not-the-token\n";
  }
  auto auth = TokenAuthenticator::Load((dir / "tokens.yaml").string());
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto& a = Add("a", {0, 1});
  auto& b = Add("b", {2, 3}, kCatalog, auth->get());
  Apply(a, 0, 10);
  Apply(b, 2, 20);
  Coordinate(a, {b.server->address()}, {.max_wait_ms = 0, .token_file = (dir / "peer-token").string()});
  auto imps = Get("imps");
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 30);
  EXPECT_TRUE(imps->missing_partitions.empty());
  // A wrong token: the peer is left out, and its partitions are listed.
  Coordinate(a, {b.server->address()}, {.max_wait_ms = 0, .token_file = (dir / "wrong-token").string()});
  imps = Get("imps");
  ASSERT_TRUE(imps.ok()) << imps.status();
  EXPECT_EQ(Value(*imps), 10);
  EXPECT_EQ(imps->missing_partitions, (std::vector<std::string>{Name(2), Name(3)}));
  EXPECT_EQ(cluster_->stats().peer_failures.load(), 1u);
  std::filesystem::remove_all(dir);
}

TEST_F(ClusterTest, ConfigurationErrorsAreRefusedAtCreate) {
  auto& a = Add("a", {0});
  EXPECT_FALSE(ClusterPartialSource::Create({.replica_id = "a"}, *a.source, a.catalog, a.ids).ok());
  EXPECT_FALSE(ClusterPartialSource::Create({.peers = {"127.0.0.1:1"}}, *a.source, a.catalog, a.ids).ok());
  auto st = ClusterPartialSource::Create({.peers = {"127.0.0.1:1"}, .replica_id = "a", .tls_ca_file = "/nonexistent"},
                                         *a.source, a.catalog, a.ids);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("/nonexistent"), std::string::npos);
}

}  // namespace
}  // namespace kpistream::services
