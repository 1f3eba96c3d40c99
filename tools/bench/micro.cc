// Google Benchmark micro-suite for kpid's hot path: decode (protobuf, JSON),
// route + aggregate per event (single KPI and full default catalog), commit
// (flush of dirty partials into a WriteBatch), key encoding, sketch merges.
//   build/tools/kpistream_micro_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <optional>

#include "gen/generator.h"
#include "gen/user_shapes.h"
#include "ingest/accumulator.h"
#include "ingest/decoder.h"
#include "ingest/local_ingest.h"
#include "ingest/partition_applier.h"
#include "ingest/router.h"
#include "ingest/source_mapping.h"
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

// Declared sources: the same events in users' own JSON shapes
// (gen/user_shapes.h), decoded through their mappings (simdjson).
// The avro shape is read as bare datums with the schema given (the
// Confluent frame's 5 bytes cut off): a registry only adds a cached lookup
// of the schema id per record.
void BM_DecodeMapped(benchmark::State& state, gen::UserShape shape) {
  auto recs = Records(shape == gen::UserShape::kFlat     ? gen::Format::kFlatJson
                      : shape == gen::UserShape::kNested ? gen::Format::kNestedJson
                                                         : gen::Format::kAvro);
  std::shared_ptr<const ingest::SourceMapping> mappings[kpi::kNumFamilies];
  for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
    auto spec = gen::SourceSpecFor(f, shape, "t");
    if (shape == gen::UserShape::kAvro) spec.schema_text = gen::AvroSchemaFor(f);
    mappings[static_cast<int>(f)] = *ingest::SourceMapping::Compile(spec);
  }
  if (shape == gen::UserShape::kAvro) {
    for (auto& r : recs) r.payload.erase(0, 5);
  }
  ingest::Decoder dec;
  kpi::EventView ev;
  ingest::DecodeError err;
  size_t i = 0;
  int64_t offset = 0;
  for (auto _ : state) {
    const auto& r = recs[i++ % recs.size()];
    if (!dec.DecodeMapped(*mappings[static_cast<int>(r.family)], r.payload, {.topic = "t", .offset = ++offset}, &ev,
                          &err)) {
      state.SkipWithError(err.detail.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_DecodeMapped, flat_json, gen::UserShape::kFlat);
BENCHMARK_CAPTURE(BM_DecodeMapped, nested_json, gen::UserShape::kNested);
BENCHMARK_CAPTURE(BM_DecodeMapped, avro, gen::UserShape::kAvro);

kpi::Catalog LoadCatalog(bool full) {
  auto c = full ? kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml")
                : kpi::ParseCatalog(R"(
measures:
  impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel, campaign_id, region]}
kpis:
  impressions: {formula: impressions}
)",
                                    "single.yaml");
  return std::move(*c);
}

// A temporary state store for one benchmark.
struct TempStore {
  explicit TempStore(const std::string& name, std::function<int64_t()> now_s = nullptr)
      : dir(std::filesystem::temp_directory_path() / name) {
    std::filesystem::remove_all(dir);
    store = std::move(*state::Store::Open({.path = dir.string(), .now_s = std::move(now_s)}));
  }
  ~TempStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::filesystem::path dir;
  std::unique_ptr<state::Store> store;
};

// The engine's per-record step, kpid's own (ingest::PartitionApplier:
// decode, future bound, route, lateness, the dimension caps, accumulate),
// one partition per family, without Kafka.
class Step {
 public:
  Step(const kpi::Catalog& catalog, state::Store* store)
      : ids_(*kpi::BindStateIds(catalog, store)), router_(catalog), stats_(catalog) {
    ctx_.catalog = &catalog;
    ctx_.ids = &ids_;
    ctx_.store = store;
    ctx_.router = &router_;
    ctx_.stats = &stats_;
    Restart();
  }
  const kpi::StateIds& ids() const { return ids_; }
  // Back to a partition with nothing applied (the records' times repeat:
  // without this, a second pass over them would be late).
  void Restart() {
    for (int f = 0; f < kpi::kNumFamilies; ++f) {
      appliers_[static_cast<size_t>(f)] = std::move(
          *ingest::PartitionApplier::Restore(ctx_, state::SourceId(static_cast<uint32_t>(f + 1), 0),
                                             static_cast<kpi::Family>(f), ingest::PayloadFormat::kProtobuf, kNowMs));
    }
  }
  void Apply(const gen::Record& r, ingest::Accumulator* acc) {
    auto& a = *appliers_[static_cast<size_t>(r.family)];
    a.Apply(r.payload, a.next_offset(), kNowMs, &scratch_, acc, &rejection_);
  }
  static constexpr int64_t kNowMs = 1763856000000 + 7200 * 1000;

 private:
  kpi::StateIds ids_;
  ingest::Router router_;
  ingest::IngestStats stats_;
  ingest::ApplyContext ctx_;
  ingest::ApplyScratch scratch_;
  ingest::PartitionApplier::Rejection rejection_;
  std::array<std::unique_ptr<ingest::PartitionApplier>, kpi::kNumFamilies> appliers_;
};

void BM_DecodeRouteAggregate(benchmark::State& state, bool full) {
  ingest::SilenceProtobufLogging();
  const auto recs = Records(gen::Format::kProtobuf);
  auto catalog = LoadCatalog(full);
  TempStore tmp("kpistream-micro-bench-step");
  Step step(catalog, tmp.store.get());
  ingest::Accumulator acc(catalog, step.ids());
  size_t i = 0;
  for (auto _ : state) {
    if (i % recs.size() == 0) {
      state.PauseTiming();
      step.Restart();
      state.ResumeTiming();
    }
    step.Apply(recs[i++ % recs.size()], &acc);
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
  TempStore tmp("kpistream-micro-bench");
  Step step(catalog, tmp.store.get());
  for (auto _ : state) {
    state.PauseTiming();
    step.Restart();
    ingest::Accumulator acc(catalog, step.ids());
    for (const auto& r : recs) step.Apply(r, &acc);
    state.ResumeTiming();
    state::WriteBatch batch(*tmp.store);
    acc.Flush(&batch);
    batch.PutOffset(state::SourceId(1, 0), 1, 1);
    benchmark::DoNotOptimize(tmp.store->Commit(&batch));
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}
BENCHMARK(BM_CommitFlush)->Unit(benchmark::kMillisecond);

// GetKpi's work in kpid: ctr over the last 5 minutes (two measures, 160
// groups, 4 partitions) from a store filled the way the engine fills it:
// 120k campaign events over those 5 minutes, committed every 1,000 events
// (a 200 ms commit interval at 5k events/s per partition). Arg 0: as
// committed (each bucket's partials still spread over many merge operands
// in the memtable); arg 1: after a full compaction; arg 2: as committed,
// answered from QueryService's result cache.
void BM_GetKpiCtr5m(benchmark::State& state) {
  ingest::SilenceProtobufLogging();
  auto catalog = LoadCatalog(true);
  constexpr int64_t kNow = 1763856000;
  TempStore tmp("kpistream-micro-bench-query", [] { return kNow; });
  const auto ids = *kpi::BindStateIds(catalog, tmp.store.get());
  state::FakeClock clock(kNow * 1000);
  ingest::LocalIngest ingest(catalog, ids, tmp.store.get(), {}, clock);
  gen::GenOptions o;
  o.seed = 5;
  o.count = 360000;  // a third are campaign events
  o.start_ms = (kNow - 300) * 1000;
  o.span_ms = 300 * 1000;
  gen::Generator g(o);
  gen::Record r;
  int pending = 0;
  for (uint64_t i = 0; i < o.count; ++i) {
    g.Next(&r);
    if (r.family != kpi::Family::kCampaign) continue;
    if (!ingest.Apply(1, static_cast<int32_t>(i % 4), r.family, r.payload).ok()) state.SkipWithError("apply failed");
    if (++pending == 1000) {
      pending = 0;
      if (!ingest.Commit().ok()) state.SkipWithError("commit failed");
    }
  }
  if (!ingest.Commit().ok()) state.SkipWithError("commit failed");
  if (state.range(0) == 1 && !tmp.store->CompactForTest().ok()) state.SkipWithError("compaction failed");
  query::KpiQuery q{.kpi = "ctr", .start = kNow - 300, .end = kNow};
  query::LocalPartialSource source(*tmp.store);
  query::QueryService cached(catalog, ids, source, clock);
  for (auto _ : state) {
    // A new service has an empty result cache: every Get evaluates, except
    // with arg 2 (repeated polls between two commits).
    std::optional<query::QueryService> fresh;
    if (state.range(0) != 2) fresh.emplace(catalog, ids, source, clock);
    auto v = (fresh ? *fresh : cached).Get(q);
    if (!v.ok() || v->values.size() != 1 || !v->values[0].value) state.SkipWithError("no ctr value");
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
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
