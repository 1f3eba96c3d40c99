#include "query/query.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>

#include "query/evaluate.h"
#include "query/plan.h"

namespace kpistream::query {

namespace {

// Every string is length-prefixed, so no two queries share a key whatever
// bytes their names and filter values hold.
std::string CacheKey(const KpiQuery& q) {
  std::string key = fmt::format("{}:{}{}:{}:", q.kpi.size(), q.kpi, q.start, q.end);
  for (const auto& g : q.group_by) fmt::format_to(std::back_inserter(key), "g{}:{}", g.size(), g);
  for (const auto& [k, v] : q.filter) fmt::format_to(std::back_inserter(key), "f{}:{}{}:{}", k.size(), k, v.size(), v);
  if (q.top > 0) fmt::format_to(std::back_inserter(key), "t{}{}", q.top, q.top_ascending ? "a" : "d");
  return key;
}

// What the plans read, one entry per measure and piece list.
std::vector<MeasurePieces> Reads(const std::vector<const QueryPlan*>& plans) {
  std::vector<MeasurePieces> out;
  for (const QueryPlan* plan : plans) {
    for (const auto* list : {&plan->inputs, &plan->domain}) {
      for (const InputPlan& in : *list) out.push_back({in.measure_id, in.pieces});
    }
  }
  return out;
}

// One past the newest event time stored, in seconds: nothing at or after it
// is in the snapshot (kpi::CoverWindow).
int64_t DataEnd(const std::vector<PartitionPosition>& positions, int64_t* watermark_ms) {
  int64_t newest = std::numeric_limits<int64_t>::min();
  for (const auto& p : positions) newest = std::max(newest, p.newest_event_ms);
  if (newest == std::numeric_limits<int64_t>::min()) {
    *watermark_ms = 0;
    return std::numeric_limits<int64_t>::min() / 2;
  }
  *watermark_ms = newest;
  return kpi::FloorDiv(newest, 1000) + 1;
}

}  // namespace

size_t AnswerBytes(const std::vector<GroupValue>& values) {
  size_t n = 16;
  for (const auto& gv : values) {
    n += 16;
    for (const auto& [k, v] : gv.group) n += 8 + k.size() + v.size();
  }
  return n;
}

// One evaluation in progress, shared by every Get of the same query that
// arrives while it runs (at the same sequence and second).
struct QueryService::Cache {
  struct Flight {
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    absl::StatusOr<KpiAnswer> result;
  };
  std::mutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights;
  uint64_t sequence = 0;  // the source's sequence the entries were read at
  int64_t now_s = 0;      // and the clock (retention rounding reads it)
  size_t bytes = 0;
  absl::flat_hash_map<std::string, KpiAnswer> entries;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t shared = 0;
};

QueryService::QueryService(const kpi::Catalog& catalog, const kpi::StateIds& ids, const PartialSource& source,
                           const state::Clock& clock, QueryOptions options)
    : catalog_(catalog),
      ids_(ids),
      source_(source),
      clock_(clock),
      options_(options),
      cache_(std::make_unique<Cache>()) {}
QueryService::~QueryService() = default;

QueryService::CacheStats QueryService::cache_stats() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return {cache_->hits, cache_->misses, cache_->shared};
}

absl::StatusOr<KpiAnswer> QueryService::Compute(const KpiQuery& q) const {
  absl::StatusOr<KpiAnswer> out = absl::UnavailableError("no snapshot");
  // UNAVAILABLE comes only from a snapshot that reads peers (one that left
  // mid-answer): a second snapshot sees the cluster as it now is.
  for (int attempt = 0; attempt < 2 && absl::IsUnavailable(out.status()); ++attempt) {
    auto snapshot = source_.Snapshot();
    if (!snapshot.ok()) return snapshot.status();
    out = ComputeOn(q, **snapshot);
  }
  return out;
}

absl::StatusOr<std::vector<absl::StatusOr<KpiAnswer>>> QueryService::GetBatch(
    const std::vector<KpiQuery>& queries) const {
  auto out = GetBatchOnce(queries);
  if (!out.ok()) return out;
  // As Compute: a peer that left mid-answer fails every query alike.
  if (std::any_of(out->begin(), out->end(), [](const auto& a) { return absl::IsUnavailable(a.status()); })) {
    out = GetBatchOnce(queries);
  }
  return out;
}

absl::StatusOr<std::vector<absl::StatusOr<KpiAnswer>>> QueryService::GetBatchOnce(
    const std::vector<KpiQuery>& queries) const {
  auto snapshot = source_.Snapshot();
  if (!snapshot.ok()) return snapshot.status();
  // Answers cached at the snapshot's own commit (and second) are the ones
  // it would give: they are taken, the others computed on it and cached.
  const uint64_t sequence = (*snapshot)->sequence();
  const int64_t now = clock_.NowSeconds();
  std::vector<absl::StatusOr<KpiAnswer>> out(queries.size());
  std::vector<std::string> keys(queries.size());
  std::vector<bool> cached(queries.size(), false);
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    const bool current = cache_->sequence == sequence && cache_->now_s == now;
    for (size_t i = 0; i < queries.size(); ++i) {
      keys[i] = CacheKey(queries[i]);
      if (!current) continue;
      if (auto it = cache_->entries.find(keys[i]); it != cache_->entries.end()) {
        out[i] = it->second;
        cached[i] = true;
        ++cache_->hits;
      }
    }
  }
  for (size_t i = 0; i < queries.size(); ++i) {
    if (cached[i]) continue;
    out[i] = ComputeOn(queries[i], **snapshot);
    if (out[i].ok() && clock_.NowSeconds() == now) CacheInsert(keys[i], *out[i], sequence, now);
  }
  return out;
}

void QueryService::CacheInsert(const std::string& key, const KpiAnswer& answer, uint64_t sequence, int64_t now) const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  CacheInsertLocked(key, answer, sequence, now);
}

void QueryService::CacheInsertLocked(const std::string& key, const KpiAnswer& answer, uint64_t sequence,
                                     int64_t now) const {
  const size_t bytes = AnswerBytes(answer.values) + key.size();
  if (bytes > kCacheMaxEntryBytes) return;
  if (cache_->sequence == sequence && cache_->now_s == now && cache_->bytes + bytes <= kCacheMaxBytes &&
      cache_->entries.emplace(key, answer).second) {
    cache_->bytes += bytes;
  }
}

absl::StatusOr<KpiAnswer> QueryService::ComputeOn(const KpiQuery& q, const PartialSnapshot& snap) const {
  const PartialSnapshot* snapshot = &snap;
  KpiAnswer a;
  const PlanTime time{.data_end = DataEnd(snapshot->positions(), &a.watermark_ms),
                      .now = clock_.NowSeconds(),
                      .retention = options_.retention};
  auto plan = PlanQuery(catalog_, ids_, q, time, /*allow_empty_window=*/true);
  if (!plan.ok()) return plan.status();
  if (auto st = snapshot->Prefetch(Reads({&*plan})); !st.ok()) return st;
  auto values = Evaluate(catalog_, q, *plan, *snapshot);
  if (!values.ok()) return values.status();
  if (const size_t bytes = AnswerBytes(*values); bytes > options_.max_answer_bytes) {
    return absl::ResourceExhaustedError(fmt::format(
        "the answer has {} groups (~{} KiB), more than the {} KiB an answer may have: filter on a dimension, group "
        "by fewer dimensions or by one with fewer values",
        values->size(), bytes >> 10, options_.max_answer_bytes >> 10));
  }
  a.values = std::move(*values);
  a.covered = plan->coverage.covered;
  a.rounded = plan->coverage.rounded;
  a.positions = snapshot->positions();
  a.missing_partitions = snapshot->missing();
  return a;
}

absl::StatusOr<KpiAnswer> QueryService::Get(const KpiQuery& q) const {
  const std::string key = CacheKey(q);
  const uint64_t sequence = source_.Sequence();
  const int64_t now = clock_.NowSeconds();
  std::shared_ptr<Cache::Flight> flight;
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
      flight = std::make_shared<Cache::Flight>();
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
  // Cached only if no write landed while it was computed: the result then
  // reflects exactly the source at `sequence`. The entry goes in and the
  // flight out under one lock, so a call arriving in between finds one of
  // them and never evaluates again.
  const bool cacheable = result.ok() && source_.Sequence() == sequence && clock_.NowSeconds() == now;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cacheable) CacheInsertLocked(key, *result, sequence, now);
    if (auto f = cache_->flights.find(key); f != cache_->flights.end() && f->second == flight) {
      cache_->flights.erase(f);
    }
  }
  return result;
}

absl::StatusOr<RangeAnswer> QueryService::Range(const KpiQuery& q, int64_t step, int64_t window_s) const {
  auto out = RangeOnce(q, step, window_s);
  if (absl::IsUnavailable(out.status())) out = RangeOnce(q, step, window_s);  // as Compute
  return out;
}

absl::StatusOr<RangeAnswer> QueryService::RangeOnce(const KpiQuery& q, int64_t step, int64_t window_s) const {
  const kpi::KpiDef* kpi = catalog_.FindKpi(q.kpi);
  if (kpi == nullptr) return absl::NotFoundError(fmt::format("unknown KPI '{}' (ListKpis shows the catalog)", q.kpi));
  if (q.end <= q.start) {
    return absl::InvalidArgumentError(fmt::format("range end ({}) must be after its start ({})", q.end, q.start));
  }
  if (step <= 0) return absl::InvalidArgumentError("step must be positive, e.g. 1m");
  for (int mi : kpi->measures) {
    const auto& m = catalog_.measures[static_cast<size_t>(mi)];
    if (step % m.bucket_seconds != 0) {
      return absl::InvalidArgumentError(
          fmt::format("step {}s is not a multiple of measure '{}' bucket ({}s)", step, m.name, m.bucket_seconds));
    }
  }
  if (window_s < 0) return absl::InvalidArgumentError("a rolling window must be positive, e.g. 24h");
  if (window_s > 0) {
    for (int mi : kpi->measures) {
      const auto& m = catalog_.measures[static_cast<size_t>(mi)];
      if (window_s % m.bucket_seconds != 0) {
        return absl::InvalidArgumentError(fmt::format(
            "rolling window {}s is not a multiple of measure '{}' bucket ({}s)", window_s, m.name, m.bucket_seconds));
      }
    }
  }
  if ((q.end - q.start) / step > options_.max_range_points) {
    return absl::InvalidArgumentError(fmt::format("range has {} points; the maximum is {}: use a larger step",
                                                  (q.end - q.start) / step, options_.max_range_points));
  }
  auto snapshot = source_.Snapshot();
  if (!snapshot.ok()) return snapshot.status();
  RangeAnswer out;
  const PlanTime time{.data_end = DataEnd((*snapshot)->positions(), &out.watermark_ms),
                      .now = clock_.NowSeconds(),
                      .retention = options_.retention};
  std::map<Labels, Series> series;
  size_t bytes = 0;
  // Every step planned first, so that the snapshot can fetch what they all
  // read at once (PartialSnapshot::Prefetch).
  std::vector<KpiQuery> steps;
  std::vector<QueryPlan> plans;
  for (int64_t t = q.start; t < q.end; t += step) {
    KpiQuery one = q;
    if (window_s > 0) {
      one.start = t - window_s;
      one.end = t;
    } else {
      one.start = t;
      one.end = std::min(t + step, q.end);
    }
    auto plan = PlanQuery(catalog_, ids_, one, time, /*allow_empty_window=*/false);
    if (!plan.ok()) return plan.status();
    steps.push_back(std::move(one));
    plans.push_back(std::move(*plan));
  }
  {
    std::vector<const QueryPlan*> all;
    for (const auto& p : plans) all.push_back(&p);
    if (auto st = (*snapshot)->Prefetch(Reads(all)); !st.ok()) return st;
  }
  for (size_t k = 0; k < steps.size(); ++k) {
    const int64_t t = q.start + static_cast<int64_t>(k) * step;
    const KpiQuery& one = steps[k];
    const QueryPlan* plan = &plans[k];
    auto vals = Evaluate(catalog_, one, *plan, **snapshot);
    if (!vals.ok()) return vals.status();
    bytes += AnswerBytes(*vals);
    if (bytes > options_.max_answer_bytes) {
      return absl::ResourceExhaustedError(fmt::format(
          "the range answer passes {} KiB at step {} of {}: use a larger step, a shorter range, a filter, or "
          "fewer group-by dimensions",
          options_.max_answer_bytes >> 10, (t - q.start) / step + 1, (q.end - q.start + step - 1) / step));
    }
    // A step reaching past the newest stored event can still change.
    const bool open = one.end > time.data_end;
    for (auto& gv : *vals) {
      auto& s = series[gv.group];
      s.group = gv.group;
      s.points.push_back({t, gv.value, open});
    }
  }
  for (auto& [k, s] : series) out.series.push_back(std::move(s));
  out.positions = (*snapshot)->positions();
  out.missing_partitions = (*snapshot)->missing();
  return out;
}

}  // namespace kpistream::query
