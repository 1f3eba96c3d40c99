// What a changelog carries, without Kafka: a commit batch resolved to full
// values (state::Store::ResolveChanges), shipped under portable keys
// (ChangelogCodec) and restored into a store that numbers measures and
// dimensions differently, for another source id; a source's keys scanned
// and dropped alone.
#include "ingest/changelog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "state/aggregate.h"
#include "state/keys.h"

namespace kpistream::ingest {
namespace {

using state::Keyspace;

constexpr char kCatalog[] = R"(
measures:
  clicks: {family: campaign, types: [click], aggregation: count, group_by: [channel]}
  spend: {family: campaign, types: [spend], aggregation: sum, field: cost}
kpis:
  clicks: {formula: clicks, unit: count, windows: [1h]}
  spend: {formula: spend, unit: count, windows: [1h]}
)";

struct Replica {
  std::unique_ptr<state::Store> store;
  kpi::StateIds ids;
};

class ChangelogCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kpistream_changelog_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto c = kpi::ParseCatalog(kCatalog, "t.yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = std::move(*c);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A replica whose store numbered `first` names before the catalog's.
  Replica Open(const std::string& name, const std::vector<std::string>& first) {
    state::StoreOptions o;
    o.path = (dir_ / name).string();
    auto s = state::Store::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    Replica r{std::move(*s), {}};
    for (const auto& f : first) {
      EXPECT_TRUE(r.store->IdFor("measure", f).ok());
      EXPECT_TRUE(r.store->IdFor("dimension", f).ok());
    }
    auto ids = kpi::BindStateIds(catalog_, r.store.get());
    EXPECT_TRUE(ids.ok()) << ids.status();
    r.ids = std::move(*ids);
    return r;
  }

  static int64_t CountAt(const Replica& r, size_t measure, uint64_t source, int64_t bucket) {
    int64_t count = -1;
    EXPECT_TRUE(r.store
                    ->Scan(state::Tier::kFine, r.ids.measures[measure], source, bucket, bucket + 1,
                           [&](int64_t, std::string_view, std::string_view enc) {
                             state::Agg a;
                             EXPECT_TRUE(state::DecodeAgg(enc, &a));
                             count = a.count;
                           })
                    .ok());
    return count;
  }

  std::filesystem::path dir_;
  kpi::Catalog catalog_;
};

std::string GroupKey(std::string_view v) {
  std::string g;
  state::AppendGroupValue(&g, v);
  return g;
}

std::string Counted(int64_t n) {
  state::Agg a;
  a.count = n;
  return state::EncodeAgg(a);
}

TEST_F(ChangelogCodecTest, FullValuesUnderPortableKeysRestoreIntoAnotherNumbering) {
  Replica a = Open("a", {});
  Replica b = Open("b", {"older.measure", "another"});
  ASSERT_NE(a.ids.measures[0], b.ids.measures[0]) << "the test needs two numberings";
  ASSERT_NE(a.ids.dimensions[0], b.ids.dimensions[0]);
  const uint64_t src_a = state::SourceId(7, 3);
  const uint64_t src_b = state::SourceId(2, 3);
  const int64_t bucket = 1764460800;
  const std::string clicks_key = state::AggKey(state::Tier::kFine, a.ids.measures[0], src_a, bucket, GroupKey("web"));

  {  // a first commit, as today: merges
    state::WriteBatch wb(*a.store);
    wb.MergePartial(clicks_key, Counted(2));
    ASSERT_TRUE(a.store->Commit(&wb).ok());
  }
  // The next commit, resolved for the changelog.
  state::WriteBatch wb(*a.store);
  wb.MergePartial(clicks_key, Counted(3));
  wb.PutOffset(src_a, 42, 1764460800123);
  wb.PutKeptValue(src_a, a.ids.dimensions[0], "web");
  wb.PutKeptCount(src_a, a.ids.dimensions[0], 1);
  wb.PutEventId(src_a, "ev-1", 1764460800123, 41);
  wb.PutChangelogOffset(src_a, 17);
  std::vector<std::tuple<Keyspace, std::string, std::string>> changes;
  ASSERT_TRUE(
      a.store
          ->ResolveChanges(&wb, [&](Keyspace ks, std::string_view k,
                                    std::string_view v) { changes.emplace_back(ks, std::string(k), std::string(v)); })
          .ok());
  ASSERT_EQ(changes.size(), 5u);
  // The partial ships as its full value after the commit: 2 + 3.
  state::Agg full;
  ASSERT_TRUE(state::DecodeAgg(std::get<2>(changes[0]), &full));
  EXPECT_EQ(full.count, 5);
  ASSERT_TRUE(a.store->Commit(&wb).ok());
  EXPECT_EQ(CountAt(a, 0, src_a, bucket), 5) << "the rewritten batch sets what the merge would have";
  auto cl = a.store->ReadChangelogOffset(src_a);
  ASSERT_TRUE(cl.ok() && cl->has_value());
  EXPECT_EQ(**cl, 17);

  // Ship under portable keys, restore into b for b's own source id.
  ChangelogCodec enc(catalog_, a.ids, a.store.get());
  ChangelogCodec dec(catalog_, b.ids, b.store.get());
  state::WriteBatch restore(*b.store);
  for (const auto& [ks, key, value] : changes) {
    std::string portable, local;
    ASSERT_TRUE(enc.Encode(ks, key, &portable));
    Keyspace got;
    ASSERT_TRUE(dec.Decode(portable, src_b, &got, &local).ok());
    EXPECT_EQ(got, ks);
    restore.Put(got, local, value);
  }
  ASSERT_TRUE(b.store->Commit(&restore).ok());
  EXPECT_EQ(CountAt(b, 0, src_b, bucket), 5);
  auto pos = b.store->ReadOffset(src_b);
  ASSERT_TRUE(pos.ok() && pos->has_value());
  EXPECT_EQ((*pos)->next_offset, 42);
  EXPECT_EQ((*pos)->newest_event_ms, 1764460800123);
  auto kept = b.store->HasKeptValue(src_b, b.ids.dimensions[0], "web");
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(*kept);
  auto counts = b.store->ReadKeptCounts(src_b);
  ASSERT_TRUE(counts.ok());
  ASSERT_EQ(counts->size(), 1u);
  EXPECT_EQ((*counts)[0], std::make_pair(b.ids.dimensions[0], 1u));
  auto ev = b.store->LookupEventId(src_b, "ev-1");
  ASSERT_TRUE(ev.ok() && ev->has_value());
  EXPECT_EQ((*ev)->offset, 41);

  // A series the catalog no longer binds (an earlier shape) is not shipped.
  std::string portable;
  EXPECT_FALSE(enc.Encode(Keyspace::kAgg, state::AggKey(state::Tier::kFine, 999, src_a, bucket, ""), &portable));
  // Malformed portable keys are refused, never written somewhere.
  Keyspace ks;
  std::string local;
  for (std::string bad : {std::string(), std::string("Z"), std::string("A\x07"), std::string("O1"),
                          std::string("V\x00\x00\x01\x00", 5)}) {
    EXPECT_EQ(dec.Decode(bad, src_b, &ks, &local).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(ChangelogCodecTest, AMeasureOnlyTheWriterKnowsIsBoundByNameAndShape) {
  Replica a = Open("a", {});
  state::StoreOptions o;
  o.path = (dir_ / "b").string();
  auto bs = state::Store::Open(o);
  ASSERT_TRUE(bs.ok());
  // b's catalog has none of the measures yet.
  ChangelogCodec enc(catalog_, a.ids, a.store.get());
  ChangelogCodec dec(kpi::Catalog{}, kpi::StateIds{}, bs->get());
  std::string portable, local;
  ASSERT_TRUE(enc.Encode(Keyspace::kAgg,
                         state::AggKey(state::Tier::kHour, a.ids.measures[1], state::SourceId(1, 0), 3600, ""),
                         &portable));
  Keyspace ks;
  ASSERT_TRUE(dec.Decode(portable, state::SourceId(5, 0), &ks, &local).ok());
  auto id = (*bs)->SeriesIdFor("measure", "spend", kpi::MeasureShape(catalog_.measures[1]));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(local, state::AggKey(state::Tier::kHour, id->id, state::SourceId(5, 0), 3600, ""));
}

TEST_F(ChangelogCodecTest, ASourceIsScannedAndDroppedAlone) {
  Replica a = Open("a", {});
  const uint64_t mine = state::SourceId(1, 4), other = state::SourceId(1, 5);
  state::WriteBatch wb(*a.store);
  for (uint64_t src : {mine, other}) {
    wb.MergePartial(state::AggKey(state::Tier::kFine, a.ids.measures[0], src, 60, GroupKey("x")), Counted(1));
    wb.MergePartial(state::AggKey(state::Tier::kDay, a.ids.measures[1], src, 0, ""), Counted(1));
    wb.PutOffset(src, 9, 1);
    wb.PutKeptValue(src, a.ids.dimensions[0], "x");
    wb.PutKeptCount(src, a.ids.dimensions[0], 1);
    wb.PutEventId(src, "e", 1, 8);
    wb.PutChangelogOffset(src, 3);
  }
  ASSERT_TRUE(a.store->Commit(&wb).ok());
  std::map<Keyspace, int> seen;
  ASSERT_TRUE(a.store->ScanSource(mine, [&](Keyspace ks, std::string_view, std::string_view) { seen[ks]++; }).ok());
  EXPECT_EQ(seen, (std::map<Keyspace, int>{
                      {Keyspace::kAgg, 2}, {Keyspace::kOffsets, 1}, {Keyspace::kGroups, 2}, {Keyspace::kEventIds, 1}}));
  ASSERT_TRUE(a.store->DropSource(mine).ok());
  int left = 0;
  ASSERT_TRUE(a.store->ScanSource(mine, [&](Keyspace, std::string_view, std::string_view) { ++left; }).ok());
  EXPECT_EQ(left, 0);
  EXPECT_FALSE(a.store->ReadChangelogOffset(mine)->has_value());
  int others = 0;
  ASSERT_TRUE(a.store->ScanSource(other, [&](Keyspace, std::string_view, std::string_view) { ++others; }).ok());
  EXPECT_EQ(others, 6);
  EXPECT_EQ(**a.store->ReadChangelogOffset(other), 3);
}

}  // namespace
}  // namespace kpistream::ingest
