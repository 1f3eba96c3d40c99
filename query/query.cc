#include "query/query.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "state/aggregate.h"

namespace kpistream::query {
namespace {

int DimIndex(const kpi::MeasureDef& m, const std::string& dim) {
  for (size_t i = 0; i < m.group_by.size(); ++i) {
    if (m.group_by[i] == dim) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

std::optional<double> MeasureValue(const kpi::MeasureDef& m, const state::Partial* p, double q) {
  static const state::Agg kNoData;
  const state::Agg& agg = p ? p->agg : kNoData;
  switch (m.aggregation) {
    case kpi::Aggregation::kCount:
      return static_cast<double>(agg.count);
    case kpi::Aggregation::kSum:
      return agg.sum();
    case kpi::Aggregation::kMin:
      if (agg.count == 0) return std::nullopt;
      return agg.min;
    case kpi::Aggregation::kMax:
      if (agg.count == 0) return std::nullopt;
      return agg.max;
    case kpi::Aggregation::kAvg:
      if (agg.count == 0) return std::nullopt;
      return agg.sum() / static_cast<double>(agg.count);
    case kpi::Aggregation::kDistinct:
      return p && p->hll ? std::round(p->hll->Estimate()) : 0.0;
    case kpi::Aggregation::kQuantile:
      if (!p || !p->sketch) return std::nullopt;
      return p->sketch->Quantile(q);
    case kpi::Aggregation::kLast:
      if (!p || p->last.empty()) return std::nullopt;
      return p->last.value;
  }
  return std::nullopt;
}

absl::StatusOr<const kpi::KpiDef*> QueryEngine::Check(const KpiQuery& q, bool allow_empty_window) const {
  const kpi::KpiDef* kpi = catalog_.FindKpi(q.kpi);
  if (kpi == nullptr) {
    return absl::NotFoundError(fmt::format("unknown KPI '{}' (ListKpis shows the catalog)", q.kpi));
  }
  // A calendar window at its first instant ("today" at midnight) is empty,
  // not an error: it has no data yet.
  if (q.end < q.start || (q.end == q.start && !allow_empty_window)) {
    return absl::InvalidArgumentError(fmt::format("window end ({}) must be after its start ({})", q.end, q.start));
  }
  const auto dims = catalog_.KpiDimensions(*kpi);
  auto known = [&](const std::string& d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  std::string list;
  for (const auto& d : dims) list += (list.empty() ? "" : ", ") + d;
  if (list.empty()) list = "none";
  if (!q.group_by.empty() && !known(q.group_by)) {
    return absl::InvalidArgumentError(
        fmt::format("KPI '{}' cannot be grouped by '{}' (dimensions: {})", q.kpi, q.group_by, list));
  }
  for (const auto& [k, v] : q.filter) {
    if (!known(k)) {
      return absl::InvalidArgumentError(
          fmt::format("KPI '{}' cannot be filtered on '{}' (dimensions: {})", q.kpi, k, list));
    }
  }
  return kpi;
}

absl::Status QueryEngine::ScanInput(const kpi::MeasureDef& m, int64_t start, int64_t end_excl,
                                    const std::vector<uint64_t>& sources, const ScanVisitor& visit) const {
  // Align to the measure's buckets; the window keeps its length.
  const int64_t b = m.bucket_seconds;
  int64_t end = kpi::CeilTo(end_excl, b);
  int64_t begin = kpi::FloorTo(end - (end_excl - start), b);
  // Where a tier's retention has dropped the buckets an edge needs, round
  // that edge outward to the next tier's buckets (still kept).
  const auto& so = store_.options();
  const int64_t now = so.now_s();
  auto round = [&](int64_t retention, int64_t width, int64_t fine) {
    if (retention <= 0 || fine >= width) return;
    if (begin < now - retention) begin = kpi::FloorTo(begin, width);
    if (end < now - retention) end = kpi::CeilTo(end, width);
  };
  round(so.retention_fine_s, state::kHourSeconds, b);
  round(so.retention_hour_s, state::kDaySeconds, std::max(b, state::kHourSeconds));
  const auto pieces = kpi::DecomposeWindow(begin, end, b);
  std::vector<std::string_view> vals;
  absl::Status bad = absl::OkStatus();
  auto fn = [&](int64_t, std::string_view group_key, std::string_view enc) {
    if (!bad.ok()) return;
    if (!state::SplitGroupKey(group_key, &vals) || vals.size() != m.group_by.size()) {
      bad = absl::DataLossError(fmt::format("malformed group key in measure '{}'", m.name));
      return;
    }
    if (!visit(vals, enc)) bad = absl::DataLossError(fmt::format("malformed partial in measure '{}'", m.name));
  };
  for (uint64_t source : sources) {
    for (const auto& p : pieces) {
      auto st = store_.Scan(p.tier, m.id, source, p.begin, p.end, fn);
      if (!st.ok()) return st;
      if (!bad.ok()) return bad;
    }
  }
  return absl::OkStatus();
}

namespace {

// Every string is length-prefixed, so no two queries share a key whatever
// bytes their names and filter values hold.
std::string CacheKey(const KpiQuery& q) {
  std::string key = fmt::format("{}:{}{}:{}:{}:{}", q.kpi.size(), q.kpi, q.start, q.end, q.group_by.size(), q.group_by);
  for (const auto& [k, v] : q.filter) fmt::format_to(std::back_inserter(key), "{}:{}{}:{}", k.size(), k, v.size(), v);
  return key;
}

size_t ApproxBytes(const std::vector<GroupValue>& values) {
  size_t n = sizeof(values);
  for (const auto& gv : values) {
    n += sizeof(GroupValue);
    for (const auto& [k, v] : gv.group) n += sizeof(gv.group[0]) + k.size() + v.size();
  }
  return n;
}

}  // namespace

QueryEngine::CacheStats QueryEngine::cache_stats() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return {cache_->hits, cache_->misses, cache_->shared};
}

absl::StatusOr<std::vector<GroupValue>> QueryEngine::Get(const KpiQuery& q) const {
  const std::string key = CacheKey(q);
  const uint64_t sequence = store_.LatestSequence();
  const int64_t now = store_.options().now_s();
  std::shared_ptr<Flight> flight;
  bool leader = false;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (sequence < cache_->sequence || (sequence == cache_->sequence && now < cache_->now_s)) {
      // This call read the sequence (or the clock) before a commit (or a
      // second) another call has already seen: it evaluates alone, neither
      // using nor filling the newer cache.
      ++cache_->misses;
    } else if (sequence > cache_->sequence || now > cache_->now_s) {
      // Evaluations still running finish for their own callers.
      cache_->entries.clear();
      cache_->flights.clear();
      cache_->bytes = 0;
      cache_->sequence = sequence;
      cache_->now_s = now;
    } else if (auto it = cache_->entries.find(key); it != cache_->entries.end()) {
      ++cache_->hits;
      return it->second;
    } else if (auto f = cache_->flights.find(key); f != cache_->flights.end()) {
      ++cache_->shared;
      flight = f->second;
    }
    if (!flight && sequence == cache_->sequence && now == cache_->now_s) {
      ++cache_->misses;
      flight = std::make_shared<Flight>();
      cache_->flights.emplace(key, flight);
      leader = true;
    }
  }
  if (!flight) return Compute(q);
  if (!leader) {
    std::unique_lock<std::mutex> wait(flight->mu);
    flight->done_cv.wait(wait, [&] { return flight->done; });
    return flight->result;
  }
  auto result = Compute(q);
  {
    std::lock_guard<std::mutex> lock(flight->mu);
    flight->result = result;
    flight->done = true;
  }
  flight->done_cv.notify_all();
  std::lock_guard<std::mutex> lock(cache_->mu);
  if (auto f = cache_->flights.find(key); f != cache_->flights.end() && f->second == flight) cache_->flights.erase(f);
  // Cached only if no write landed while it was computed: the result then
  // reflects exactly the store at `sequence`.
  if (!result.ok() || store_.LatestSequence() != sequence || store_.options().now_s() != now) return result;
  const size_t bytes = ApproxBytes(*result) + key.size();
  if (bytes > kCacheMaxEntryBytes) return result;
  if (cache_->sequence == sequence && cache_->now_s == now && cache_->bytes + bytes <= kCacheMaxBytes &&
      cache_->entries.emplace(key, *result).second) {
    cache_->bytes += bytes;
  }
  return result;
}

absl::StatusOr<std::vector<GroupValue>> QueryEngine::Compute(const KpiQuery& q) const {
  auto kpi_or = Check(q, /*allow_empty_window=*/true);
  if (!kpi_or.ok()) return kpi_or.status();
  const kpi::KpiDef& kpi = **kpi_or;
  auto offsets = store_.ListOffsets();
  if (!offsets.ok()) return offsets.status();
  std::vector<uint64_t> sources;
  for (const auto& [source, next] : *offsets) sources.push_back(source);

  // group value -> per-input partial (indexed like kpi.inputs)
  std::map<std::string, std::vector<std::optional<state::Partial>>> groups;
  if (q.group_by.empty()) groups[""].resize(kpi.inputs.size());
  std::vector<std::optional<double>> group_counts(kpi.inputs.size());
  for (size_t ii = 0; ii < kpi.inputs.size(); ++ii) {
    const kpi::KpiInput& in = kpi.inputs[ii];
    const kpi::MeasureDef& m = catalog_.measures[static_cast<size_t>(in.measure)];
    kpi::TimeRange range{q.start, q.end};
    if (!in.window.empty()) {
      auto r = kpi::ResolveWindow(in.window, q.end, catalog_.timezone);
      if (!r.ok()) return r.status();
      range = *r;
    }
    if (!in.group_dim.empty()) {
      // groups_at_least: value per group of the dimension, then count.
      const int dim = DimIndex(m, in.group_dim);
      std::map<std::string, state::Partial, std::less<>> per_group;
      auto st = ScanInput(m, range.start, range.end, sources, [&](const auto& vals, std::string_view enc) {
        auto it = per_group.find(vals[static_cast<size_t>(dim)]);
        if (it == per_group.end()) {
          it =
              per_group
                  .emplace(std::string(vals[static_cast<size_t>(dim)]), state::Partial(kpi::PartialKind(m.aggregation)))
                  .first;
        }
        return it->second.MergeEncoded(enc);
      });
      if (!st.ok()) return st;
      int64_t n = 0;
      for (const auto& [g, p] : per_group) {
        const auto v = MeasureValue(m, &p, 0.5);
        if (v && *v >= in.threshold) ++n;
      }
      group_counts[ii] = static_cast<double>(n);
      continue;
    }
    const int gdim = q.group_by.empty() ? -1 : DimIndex(m, q.group_by);
    std::vector<std::pair<int, std::string>> filt;
    for (const auto& [k, v] : q.filter) filt.emplace_back(DimIndex(m, k), v);
    auto st = ScanInput(m, range.start, range.end, sources, [&](const auto& vals, std::string_view enc) {
      for (const auto& [i, v] : filt) {
        if (vals[static_cast<size_t>(i)] != v) return true;
      }
      auto& accs = groups[gdim < 0 ? std::string() : std::string(vals[static_cast<size_t>(gdim)])];
      if (accs.empty()) accs.resize(kpi.inputs.size());
      auto& acc = accs[ii];
      if (!acc) acc.emplace(kpi::PartialKind(m.aggregation));
      return acc->MergeEncoded(enc);
    });
    if (!st.ok()) return st;
  }

  std::vector<GroupValue> out;
  out.reserve(groups.size());
  for (auto& entry : groups) {
    const std::string& g = entry.first;
    auto& accs = entry.second;  // a named reference: lambdas cannot capture bindings in clang 14
    GroupValue gv;
    if (!q.group_by.empty()) gv.group.emplace_back(q.group_by, g);
    gv.value = kpi::Eval(kpi.expr, [&](int input, double quantile) -> std::optional<double> {
      const auto i = static_cast<size_t>(input);
      if (group_counts[i]) return group_counts[i];
      return MeasureValue(catalog_.measures[static_cast<size_t>(kpi.inputs[i].measure)], accs[i] ? &*accs[i] : nullptr,
                          quantile);
    });
    out.push_back(std::move(gv));
  }
  return out;
}

absl::StatusOr<std::vector<Series>> QueryEngine::Range(const KpiQuery& q, int64_t step) const {
  auto kpi_or = Check(q, /*allow_empty_window=*/false);
  if (!kpi_or.ok()) return kpi_or.status();
  if (step <= 0) return absl::InvalidArgumentError("step must be positive, e.g. 1m");
  for (int mi : (*kpi_or)->measures) {
    const auto& m = catalog_.measures[mi];
    if (step % m.bucket_seconds != 0) {
      return absl::InvalidArgumentError(
          fmt::format("step {}s is not a multiple of measure '{}' bucket ({}s)", step, m.name, m.bucket_seconds));
    }
  }
  if ((q.end - q.start) / step > kMaxRangePoints) {
    return absl::InvalidArgumentError(fmt::format("range has {} points; the maximum is {}: use a larger step",
                                                  (q.end - q.start) / step, kMaxRangePoints));
  }
  std::map<std::string, Series> series;
  for (int64_t t = q.start; t < q.end; t += step) {
    KpiQuery one = q;
    one.start = t;
    one.end = std::min(t + step, q.end);
    auto vals = Compute(one);
    if (!vals.ok()) return vals.status();
    for (auto& gv : *vals) {
      const std::string key = gv.group.empty() ? "" : gv.group[0].second;
      auto& s = series[key];
      s.group = gv.group;
      s.points.push_back({t, gv.value});
    }
  }
  std::vector<Series> out;
  for (auto& [k, s] : series) out.push_back(std::move(s));
  return out;
}

}  // namespace kpistream::query
