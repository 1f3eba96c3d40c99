// Cluster-wide answers (services/cluster.h) against one store holding every
// partition: the same data, the same queries, evaluated with an empty
// result cache each time, so the difference is the fan-out (a stream per
// peer over loopback gRPC, partials merged by the asker).
//   build/tools/kpistream_cluster_bench [--benchmark_filter=...]
// Arg 0: one store with all 4 partitions; arg 1: three replicas (in this
// process, each its own store and gRPC server) owning 2, 1 and 1 of them,
// asked through the first.
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <filesystem>
#include <mutex>
#include <set>

#include "gen/generator.h"
#include "ingest/decoder.h"
#include "ingest/local_ingest.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "services/cluster.h"
#include "services/grpc_server.h"
#include "state/keys.h"
#include "state/store.h"

namespace kpistream {
namespace {

constexpr int64_t kNow = 1763856000;
constexpr int kPartitions = 4;

// One replica: a store holding some partitions, answering peers.
struct Replica {
  Replica(const kpi::Catalog& cat, const std::string& id_, std::set<int> owned_, const state::Clock& clock)
      : id(id_),
        owned(std::move(owned_)),
        dir(std::filesystem::temp_directory_path() / fmt::format("kpistream-cluster-bench-{}", id_)) {
    std::filesystem::remove_all(dir);
    store = std::move(*state::Store::Open({.path = dir.string(), .now_s = [] { return kNow; }}));
    ids = *kpi::BindStateIds(cat, store.get());
    ingest = std::make_unique<ingest::LocalIngest>(cat, ids, store.get(), ingest::ApplierOptions{}, clock);
    source = std::make_unique<query::LocalPartialSource>(*store, [this] {
      query::Ownership o;
      for (int p = 0; p < kPartitions; ++p) {
        if (owned.count(p)) {
          o.sources.push_back(state::SourceId(1, p));
          o.names.push_back(fmt::format("campaign[{}]", p));
        } else {
          o.missing.push_back(fmt::format("campaign[{}]", p));
        }
      }
      return o;
    });
    queries = std::make_unique<query::QueryService>(cat, ids, *source, clock);
    server = std::move(*services::GrpcServer::Start(
        {.listen = "127.0.0.1:0", .alerts = false, .replica_id = id},
        [this, &cat] {
          services::ServingView v{.catalog = &cat, .queries = queries.get()};
          v.partials = source.get();
          v.ids = &ids;
          return v;
        },
        clock));
  }
  ~Replica() {
    server->Shutdown();
    server.reset();
    queries.reset();
    ingest.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::string id;
  std::set<int> owned;
  std::filesystem::path dir;
  std::unique_ptr<state::Store> store;
  kpi::StateIds ids;
  std::unique_ptr<ingest::LocalIngest> ingest;
  std::unique_ptr<query::LocalPartialSource> source;
  std::unique_ptr<query::QueryService> queries;
  std::unique_ptr<services::GrpcServer> server;
};

// 120k campaign events over the last 5 minutes, spread over 4 partitions
// (as BM_GetKpiCtr5m in micro.cc), each applied by the replicas that own
// its partition, then compacted (a steady state, not the memtable's).
struct Setup {
  explicit Setup(bool cluster) : catalog(*kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml")) {
    if (cluster) {
      replicas.push_back(std::make_unique<Replica>(catalog, "a", std::set<int>{0, 1}, clock));
      replicas.push_back(std::make_unique<Replica>(catalog, "b", std::set<int>{2}, clock));
      replicas.push_back(std::make_unique<Replica>(catalog, "c", std::set<int>{3}, clock));
    } else {
      replicas.push_back(std::make_unique<Replica>(catalog, "all", std::set<int>{0, 1, 2, 3}, clock));
    }
    gen::GenOptions o;
    o.seed = 5;
    o.count = 360000;
    o.start_ms = (kNow - 300) * 1000;
    o.span_ms = 300 * 1000;
    gen::Generator g(o);
    gen::Record r;
    for (uint64_t i = 0; i < o.count; ++i) {
      g.Next(&r);
      if (r.family != kpi::Family::kCampaign) continue;
      const int p = static_cast<int>(i % kPartitions);
      for (auto& rep : replicas) {
        if (rep->owned.count(p)) (void)rep->ingest->Apply(1, p, r.family, r.payload);
      }
    }
    for (auto& rep : replicas) {
      (void)rep->ingest->Commit();
      (void)rep->store->CompactForTest();
    }
    if (cluster) {
      services::ClusterOptions co;
      for (auto& rep : replicas) co.peers.push_back(rep->server->address());
      co.replica_id = replicas[0]->id;
      fanout = std::move(*services::ClusterPartialSource::Create(co, *replicas[0]->source, catalog, replicas[0]->ids));
    }
  }
  const query::PartialSource& source() const {
    return fanout ? static_cast<const query::PartialSource&>(*fanout) : *replicas[0]->source;
  }
  state::FakeClock clock{kNow * 1000};
  kpi::Catalog catalog;
  std::vector<std::unique_ptr<Replica>> replicas;
  std::unique_ptr<services::ClusterPartialSource> fanout;
};

// GetKpi's evaluation: ctr over the last 5 minutes (two measures, 160
// groups of partials per partition), with the groups' domain read too.
void BM_ClusterGetKpiCtr5m(benchmark::State& state) {
  ingest::SilenceProtobufLogging();
  Setup s(state.range(0) == 1);
  const query::KpiQuery q{.kpi = "ctr", .start = kNow - 300, .end = kNow, .group_by = {"channel"}};
  double ctr = -1;
  for (auto _ : state) {
    query::QueryService fresh(s.catalog, s.replicas[0]->ids, s.source(), s.clock);  // an empty cache
    auto v = fresh.Get(q);
    if (!v.ok() || v->values.empty() || !v->missing_partitions.empty()) {
      state.SkipWithError("no complete ctr answer");
      break;
    }
    ctr = *v->values[0].value;
    benchmark::DoNotOptimize(v);
  }
  state.counters["ctr_first_channel"] = ctr;  // equal in both rows: the same answer
}
BENCHMARK(BM_ClusterGetKpiCtr5m)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// QueryRange's evaluation: impressions per channel, one point a minute over
// the 5 minutes, read from each peer in one round trip (Prefetch).
void BM_ClusterRangeImpressions(benchmark::State& state) {
  ingest::SilenceProtobufLogging();
  Setup s(state.range(0) == 1);
  const query::KpiQuery q{.kpi = "impressions", .start = kNow - 300, .end = kNow, .group_by = {"channel"}};
  for (auto _ : state) {
    query::QueryService fresh(s.catalog, s.replicas[0]->ids, s.source(), s.clock);
    auto v = fresh.Range(q, 60);
    if (!v.ok() || v->series.empty()) {
      state.SkipWithError("no range answer");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_ClusterRangeImpressions)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kpistream

BENCHMARK_MAIN();
