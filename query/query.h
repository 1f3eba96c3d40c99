// Answers KPI queries from the stored partials: a window is decomposed into
// day, hour and fine buckets (invariant 3), partials are merged across
// partitions and buckets, then the KPI formula is evaluated per group.
//
// Thread-safety: const methods are safe to call concurrently; they read the
// store without blocking the consumer thread (invariant 5).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "state/aggregate.h"
#include "state/keys.h"
#include "state/store.h"

namespace kpistream::query {

using Labels = std::vector<std::pair<std::string, std::string>>;

// The value of a measure from its merged partial (null when there was no
// data); q is the quantile for quantile measures. count, sum and distinct
// are 0 without data; the others have no value.
std::optional<double> MeasureValue(const kpi::MeasureDef& m, const state::Partial* p, double q);

struct KpiQuery {
  std::string kpi;
  int64_t start = 0;     // seconds since the epoch, inclusive
  int64_t end = 0;       // exclusive
  std::string group_by;  // empty: one value over everything
  Labels filter;         // dimension == value
};

struct GroupValue {
  Labels group;  // empty without group_by
  std::optional<double> value;
};

struct SeriesPoint {
  int64_t time;
  std::optional<double> value;
};
struct Series {
  Labels group;
  std::vector<SeriesPoint> points;
};

class QueryEngine {
 public:
  static constexpr int64_t kMaxRangePoints = 11000;

  // REQUIRES: catalog and store outlive the engine; measure ids are set.
  QueryEngine(const kpi::Catalog& catalog, const state::Store& store)
      : catalog_(catalog), store_(store), cache_(std::make_unique<ResultCache>()) {}

  // Errors: NOT_FOUND (unknown KPI), INVALID_ARGUMENT (bad window, group_by
  // or filter, with what to fix).
  //
  // Results are cached until the store's next write (a commit) or the next
  // second of the store's clock, whichever comes first: dashboards and
  // probes polling the same KPIs between two commits share one evaluation,
  // and each answer is the one a fresh evaluation would give. A fresh
  // evaluation of recent buckets walks every commit's merge operand still in
  // RocksDB's memtable (BM_GetKpiCtr5m: 1.2 ms against 0.19 ms once
  // compacted), so this is what keeps GetKpi cheap under polling. Calls
  // that arrive while the same query is being evaluated wait for that
  // evaluation instead of running their own (no burst of identical
  // evaluations after each commit).
  [[nodiscard]] absl::StatusOr<std::vector<GroupValue>> Get(const KpiQuery& q) const;

  struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // evaluations
    uint64_t shared = 0;  // calls that waited for the same query's evaluation in progress
  };
  CacheStats cache_stats() const;
  // Results larger than this are not cached; the cache holds at most
  // kCacheMaxBytes (approximate) between two commits.
  static constexpr size_t kCacheMaxEntryBytes = 1 << 20;
  static constexpr size_t kCacheMaxBytes = 8 << 20;
  // Tumbling history: one point per step in [q.start, q.end).
  [[nodiscard]] absl::StatusOr<std::vector<Series>> Range(const KpiQuery& q, int64_t step) const;

 private:
  absl::StatusOr<const kpi::KpiDef*> Check(const KpiQuery& q, bool allow_empty_window) const;
  // Visits every partial of a measure in [start, end) (bucket-aligned) with
  // its split group values; the visitor returns false on a malformed partial.
  using ScanVisitor = std::function<bool(const std::vector<std::string_view>&, std::string_view)>;
  absl::Status ScanInput(const kpi::MeasureDef& m, int64_t start, int64_t end, const std::vector<uint64_t>& sources,
                         const ScanVisitor& visit) const;
  absl::StatusOr<std::vector<GroupValue>> Compute(const KpiQuery& q) const;

  // One evaluation in progress, shared by every Get of the same query that
  // arrives while it runs (at the same store sequence and second).
  struct Flight {
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    absl::StatusOr<std::vector<GroupValue>> result;
  };
  struct ResultCache {
    std::mutex mu;
    absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights;
    uint64_t sequence = 0;  // the store's LatestSequence the entries were read at
    int64_t now_s = 0;      // and its clock (retention rounding reads it)
    size_t bytes = 0;
    absl::flat_hash_map<std::string, std::vector<GroupValue>> entries;
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t shared = 0;
  };
  const kpi::Catalog& catalog_;
  const state::Store& store_;
  std::unique_ptr<ResultCache> cache_;
};

}  // namespace kpistream::query
