#include "ingest/accumulator.h"

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "kpi/window.h"
#include "state/keys.h"

namespace kpistream::ingest {

Accumulator::Accumulator(const kpi::Catalog& catalog, const kpi::StateIds& ids) : catalog_(catalog), ids_(ids) {
  for (size_t i = 0; i < catalog.measures.size(); ++i) {
    const uint32_t id = ids.measures[i];
    if (by_id_.size() <= id) by_id_.resize(id + 1, nullptr);
    by_id_[id] = &catalog.measures[i];
  }
}

void Accumulator::Add(const Contribution& c, uint64_t source, std::string_view group_key) {
  const auto& m = catalog_.measures[static_cast<size_t>(c.measure)];
  const int64_t bucket = kpi::FloorTo(kpi::FloorDiv(c.time_ms, 1000), m.bucket_seconds);
  key_ = state::AggKey(state::Tier::kFine, ids_.measures[static_cast<size_t>(c.measure)], source, bucket, group_key);
  auto it = dirty_.find(key_);
  if (it == dirty_.end()) {
    const auto kind = kpi::PartialKind(m.aggregation);
    it = dirty_.emplace(key_, state::Partial(kind)).first;
    bytes_ += key_.size() + sizeof(state::Partial) + 32;
    if (kind == state::ValueKind::kHll) bytes_ += 256;      // exact while small; dense adds its registers below
    if (kind == state::ValueKind::kSketch) bytes_ += 1024;  // typical bins
  }
  auto& p = it->second;
  switch (p.kind) {
    case state::ValueKind::kAgg:
      p.agg.Add(c.value, state::ToMicros(c.value));
      return;
    case state::ValueKind::kHll: {
      const bool was_exact = p.hll->exact();
      p.hll->AddHash(c.hash);
      if (was_exact && !p.hll->exact()) bytes_ += state::Hll::kRegisters;
      break;
    }
    case state::ValueKind::kSketch:
      p.sketch->Add(c.value);
      break;
    case state::ValueKind::kLast:
      p.last.Add(c.time_ms, c.value);
      break;
  }
  ++p.agg.count;
}

void Accumulator::Flush(state::WriteBatch* batch) {
  // Roll fine partials up to the hour and day tiers first, so each coarse
  // key gets one merge operand per commit.
  absl::flat_hash_map<std::string, state::Partial> coarse;
  auto roll = [&](state::Tier tier, int64_t width, const state::AggKeyParts& parts, const state::Partial& p) {
    auto key = state::AggKey(tier, parts.measure_id, parts.source, kpi::FloorTo(parts.bucket, width), parts.group_key);
    auto it = coarse.find(key);
    if (it == coarse.end()) it = coarse.emplace(std::move(key), state::Partial(p.kind)).first;
    it->second.Merge(p);
  };
  std::vector<std::pair<std::string_view, const state::Partial*>> out;
  out.reserve(dirty_.size() * 3);
  for (const auto& [key, p] : dirty_) {
    state::AggKeyParts parts;
    if (!state::ParseAggKey(key, &parts)) continue;  // impossible: we built it
    out.emplace_back(key, &p);
    const auto* m = by_id_[parts.measure_id];
    if (m->bucket_seconds < state::kHourSeconds) roll(state::Tier::kHour, state::kHourSeconds, parts, p);
    if (m->bucket_seconds < state::kDaySeconds) roll(state::Tier::kDay, state::kDaySeconds, parts, p);
  }
  for (const auto& [key, p] : coarse) out.emplace_back(key, &p);
  // In key order: RocksDB's memtable skiplist then reuses the previous
  // insert's search path instead of searching from the top for each key
  // (the hash maps' order is random).
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [key, p] : out) batch->MergePartial(key, p->Encode());
  Clear();
}

}  // namespace kpistream::ingest
