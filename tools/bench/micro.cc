// Google Benchmark micro-suite for kpid's hot path: decode (protobuf, JSON),
// route + aggregate per event (single KPI and full default catalog), commit
// (flush of dirty partials into a WriteBatch), key encoding, sketch merges.
//   build/tools/kpistream_micro_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <optional>

#include "gen/generator.h"
#include "ingest/accumulator.h"
#include "ingest/decoder.h"
#include "ingest/router.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "state/keys.h"
#include "state/store.h"

namespace kpistream {
namespace {

constexpr int kRecords = 20000;

std::vector<gen::Record> Records(gen::Format format) {
  gen::GenOptions o;
  o.seed = 9;
  o.count = kRecords;
  o.start_ms = 1763856000000;
  o.format = format;
  gen::Generator g(o);
  std::vector<gen::Record> out(kRecords);
  for (auto& r : out) {
    g.Next(&r);
    r.event = nullptr;
  }
  return out;
}

void BM_Decode(benchmark::State& state, gen::Format format) {
  ingest::SilenceProtobufLogging();
  const auto recs = Records(format);
  ingest::Decoder dec;
  kpi::EventView ev;
  ingest::DecodeError err;
  size_t i = 0;
  for (auto _ : state) {
    const auto& r = recs[i++ % recs.size()];
    benchmark::DoNotOptimize(dec.Decode(r.family, r.payload, ingest::PayloadFormat::kAuto, &ev, &err));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_Decode, protobuf, gen::Format::kProtobuf);
BENCHMARK_CAPTURE(BM_Decode, json, gen::Format::kJson);

kpi::Catalog LoadCatalog(bool full) {
  auto c = full ? kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml")
                : kpi::ParseCatalog(R"(
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel, campaign_id, region]}
kpis:
  impressions: {formula: impressions}
)",
                                    "single.yaml");
  uint32_t id = 1;
  for (auto& m : c->measures) m.id = id++;
  return std::move(*c);
}

// Decode + route + accumulate one record: the per-event work of the
// consumer thread.
class Applier {
 public:
  explicit Applier(const kpi::Catalog& catalog) : router_(catalog) {}
  void Apply(const gen::Record& r, uint64_t source, ingest::Accumulator* acc) {
    if (!dec_.Decode(r.family, r.payload, ingest::PayloadFormat::kProtobuf, &ev_, &err_)) return;
    router_.Route(ev_, &scratch_, &cs_);
    for (const auto& c : cs_) acc->Add(c, source, ev_.time_ms);
  }

 private:
  ingest::Router router_;
  ingest::Decoder dec_;
  kpi::EventView ev_;
  ingest::DecodeError err_;
  std::string scratch_;
  std::vector<ingest::Contribution> cs_;
};

void BM_DecodeRouteAggregate(benchmark::State& state, bool full) {
  ingest::SilenceProtobufLogging();
  const auto recs = Records(gen::Format::kProtobuf);
  auto catalog = LoadCatalog(full);
  Applier applier(catalog);
  ingest::Accumulator acc(catalog);
  size_t i = 0;
  for (auto _ : state) {
    applier.Apply(recs[i++ % recs.size()], state::SourceId(1, 0), &acc);
    if (acc.DirtyEntries() > 100000) acc.Clear();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_DecodeRouteAggregate, single_kpi, false);
BENCHMARK_CAPTURE(BM_DecodeRouteAggregate, full_catalog, true);

// Flush of one commit interval's dirty partials (200 ms at 100k events/s).
void BM_CommitFlush(benchmark::State& state) {
  ingest::SilenceProtobufLogging();
  const auto recs = Records(gen::Format::kProtobuf);
  auto catalog = LoadCatalog(true);
  const auto dir = std::filesystem::temp_directory_path() / "kpistream-micro-bench";
  std::filesystem::remove_all(dir);
  auto store = state::Store::Open({.path = dir.string()});
  Applier applier(catalog);
  for (auto _ : state) {
    state.PauseTiming();
    ingest::Accumulator acc(catalog);
    for (const auto& r : recs) applier.Apply(r, state::SourceId(1, 0), &acc);
    state.ResumeTiming();
    state::WriteBatch batch(**store);
    acc.Flush(&batch);
    batch.PutOffset(state::SourceId(1, 0), 1, 1);
    benchmark::DoNotOptimize((*store)->Commit(&batch));
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_CommitFlush)->Unit(benchmark::kMillisecond);

// GetKpi's work in kpid: ctr over the last 5 minutes (two measures, 160
// groups, 4 partitions) from a store filled the way the engine fills it:
// 120k campaign events over those 5 minutes, committed every 1,000 events
// (a 200 ms commit interval at 5k events/s per partition). Arg 0: as
// committed (each bucket's partials still spread over many merge operands
// in the memtable); arg 1: after a full compaction; arg 2: as committed,
// answered from QueryEngine's result cache.
void BM_GetKpiCtr5m(benchmark::State& state) {
  ingest::SilenceProtobufLogging();
  auto catalog = LoadCatalog(true);
  const auto dir = std::filesystem::temp_directory_path() / "kpistream-micro-bench-query";
  std::filesystem::remove_all(dir);
  constexpr int64_t kNow = 1763856000;
  auto store = state::Store::Open({.path = dir.string(), .now_s = [] { return kNow; }});
  gen::GenOptions o;
  o.seed = 5;
  o.count = 360000;  // a third are campaign events
  o.start_ms = (kNow - 300) * 1000;
  o.span_ms = 300 * 1000;
  gen::Generator g(o);
  Applier applier(catalog);
  gen::Record r;
  std::vector<std::unique_ptr<ingest::Accumulator>> accs;
  for (int p = 0; p < 4; ++p) accs.push_back(std::make_unique<ingest::Accumulator>(catalog));
  std::vector<int64_t> next(4, 0);
  int pending = 0;
  for (uint64_t i = 0; i < o.count; ++i) {
    g.Next(&r);
    if (r.family != kpi::Family::kCampaign) continue;
    const int p = static_cast<int>(i % 4);
    applier.Apply(r, state::SourceId(1, p), accs[p].get());
    ++next[p];
    if (++pending == 1000) {
      pending = 0;
      state::WriteBatch batch(**store);
      for (int q = 0; q < 4; ++q) {
        accs[q]->Flush(&batch);
        batch.PutOffset(state::SourceId(1, q), next[q], 1);
      }
      if (!(*store)->Commit(&batch).ok()) state.SkipWithError("commit failed");
    }
  }
  if (state.range(0) == 1 && !(*store)->CompactForTest().ok()) state.SkipWithError("compaction failed");
  query::KpiQuery q{.kpi = "ctr", .start = kNow - 300, .end = kNow};
  query::QueryEngine cached(catalog, **store);
  for (auto _ : state) {
    // A new engine has an empty result cache: every Get evaluates, except
    // with arg 2 (repeated polls between two commits).
    std::optional<query::QueryEngine> fresh;
    if (state.range(0) != 2) fresh.emplace(catalog, **store);
    auto v = (fresh ? *fresh : cached).Get(q);
    if (!v.ok() || v->size() != 1 || !(*v)[0].value) state.SkipWithError("no ctr value");
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_GetKpiCtr5m)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

void BM_AggKey(benchmark::State& state) {
  std::string g;
  state::AppendGroupValue(&g, "search");
  state::AppendGroupValue(&g, "cmp-17");
  state::AppendGroupValue(&g, "eu");
  int64_t b = 1763856000;
  for (auto _ : state)
    benchmark::DoNotOptimize(state::AggKey(state::Tier::kFine, 7, state::SourceId(1, 3), b += 60, g));
}
BENCHMARK(BM_AggKey);

void BM_MergeAgg(benchmark::State& state) {
  state::Agg a, b;
  b.Add(1.5, state::ToMicros(1.5));
  const auto ea = state::EncodeAgg(a), eb = state::EncodeAgg(b);
  std::string out;
  for (auto _ : state) benchmark::DoNotOptimize(state::MergeEncoded(ea, eb, &out));
}
BENCHMARK(BM_MergeAgg);

void BM_MergeHll(benchmark::State& state) {
  state::Hll a, b;
  for (int i = 0; i < 1000; ++i) b.AddHash(state::HashForSketch(std::to_string(i)));
  const auto ea = state::EncodeHll(a), eb = state::EncodeHll(b);
  std::string out;
  for (auto _ : state) benchmark::DoNotOptimize(state::MergeEncoded(ea, eb, &out));
}
BENCHMARK(BM_MergeHll);

void BM_MergeSketch(benchmark::State& state) {
  state::QuantileSketch a, b;
  for (int i = 1; i < 5000; ++i) b.Add(i * 0.7);
  std::string ea, eb, out;
  a.EncodeTo(&ea);
  b.EncodeTo(&eb);
  for (auto _ : state) benchmark::DoNotOptimize(state::MergeEncoded(ea, eb, &out));
}
BENCHMARK(BM_MergeSketch);

}  // namespace
}  // namespace kpistream

BENCHMARK_MAIN();
