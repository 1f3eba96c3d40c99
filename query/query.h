// Answers KPI queries from stored partials. The layer is cut in three:
//   plan.h      a query -> for each input measure, the buckets to read
//               (kpi/window.h decides which, and what they cover);
//   partial_source.h   a consistent snapshot of partials (the local store
//               now; peers later);
//   evaluate.h  partials merged per group, the formula evaluated.
// QueryService ties them together with one result cache; kpid has one per
// process, shared by gRPC, /metrics and the alerter.
//
// Thread-safety: QueryService's methods are safe to call concurrently; they
// read snapshots and never block the consumer thread (invariant 5).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "kpi/window.h"
#include "query/partial_source.h"
#include "state/clock.h"

namespace kpistream::query {

using Labels = std::vector<std::pair<std::string, std::string>>;

struct KpiQuery {
  std::string kpi;
  int64_t start = 0;                  // seconds since the epoch, inclusive: the window asked for
  int64_t end = 0;                    // exclusive
  std::vector<std::string> group_by;  // dimensions; empty: one value over everything
  Labels filter;                      // dimension == value
  // Grouped queries: keep the `top` groups by value (highest first, or
  // lowest with top_ascending; groups without a value last) and merge the
  // partials of all the others into one group whose every dimension reads
  // "__other__" (kOtherGroup), so the groups still add up to the whole for
  // any formula. 0: every group.
  size_t top = 0;
  bool top_ascending = false;
};

// The value the cardinality caps and `top` put the rest under.
inline constexpr char kOtherGroup[] = "__other__";

struct GroupValue {
  Labels group;  // (dimension, value) in group_by's order; empty without group_by
  std::optional<double> value;
  // The value of each input of the KPI's formula for this group (indexed
  // like KpiDef::inputs; for `groups_at_least`, the count), so that the
  // parts of a ratio can be exported and aggregated elsewhere.
  std::vector<std::optional<double>> inputs;
};

struct KpiAnswer {
  std::vector<GroupValue> values;
  // The interval the values cover: the window asked for, or the nearest
  // bucket-aligned one (kpi::CoverWindow), with `rounded` set then.
  kpi::TimeRange covered;
  bool rounded = false;
  int64_t watermark_ms = 0;                     // newest event time in the answer (0: none)
  std::vector<PartitionPosition> positions;     // what the answer reflects, per partition
  std::vector<std::string> missing_partitions;  // PartialSnapshot::missing
};

struct SeriesPoint {
  int64_t time;  // start of the step (rolling: end of the window)
  std::optional<double> value;
  bool open = false;  // the step reaches past the newest event: it can still change
};
struct Series {
  Labels group;
  std::vector<SeriesPoint> points;
};
struct RangeAnswer {
  std::vector<Series> series;
  int64_t watermark_ms = 0;
  std::vector<PartitionPosition> positions;
  std::vector<std::string> missing_partitions;
};

struct QueryOptions {
  // Answers larger than this (approximate bytes on the wire) are refused
  // with RESOURCE_EXHAUSTED and a message saying how to narrow the query:
  // gRPC's default message limit is 4 MiB, and a client must never meet a
  // transport error instead of an answer.
  size_t max_answer_bytes = 3 << 20;
  int64_t max_range_points = 11000;
  // Retention of the stored tiers (edges past it widen to coarser tiers).
  kpi::TierRetention retention{.fine = 35 * 86400, .hour = 400 * 86400, .day = 0};
};

class QueryService {
 public:
  // REQUIRES: everything passed outlives the service.
  QueryService(const kpi::Catalog& catalog, const kpi::StateIds& ids, const PartialSource& source,
               const state::Clock& clock, QueryOptions options = {});
  ~QueryService();

  // The KPI over [q.start, q.end), per group. Errors: NOT_FOUND (unknown
  // KPI), INVALID_ARGUMENT (bad window, group_by or filter, with what to
  // fix), RESOURCE_EXHAUSTED (the answer is over max_answer_bytes).
  //
  // Answers are cached until the source's next commit or the next second of
  // the clock, whichever comes first: dashboards, probes and rules polling
  // the same KPIs between two commits share one evaluation, and each answer
  // is the one a fresh evaluation would give. A fresh evaluation of recent
  // buckets walks every commit's merge operand still in RocksDB's memtable
  // (BM_GetKpiCtr5m), so this is what keeps polling cheap. Calls that
  // arrive while the same query is being evaluated wait for it.
  [[nodiscard]] absl::StatusOr<KpiAnswer> Get(const KpiQuery& q) const;
  // Several queries from one snapshot (the same commit for all), each
  // with its own result or error, in order. Shares Get's cache: answers
  // cached at the snapshot's commit are used, the others are cached.
  [[nodiscard]] absl::StatusOr<std::vector<absl::StatusOr<KpiAnswer>>> GetBatch(
      const std::vector<KpiQuery>& queries) const;
  // History, all from one snapshot, one point per step t in [q.start,
  // q.end). window_s 0 (tumbling): each point is the KPI over
  // [t, t + step). window_s > 0 (rolling, as Prometheus range queries):
  // each point is the KPI over [t - window_s, t). step must be a multiple of
  // every input measure's bucket; a rolling window, too.
  [[nodiscard]] absl::StatusOr<RangeAnswer> Range(const KpiQuery& q, int64_t step, int64_t window_s = 0) const;

  struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // evaluations
    uint64_t shared = 0;  // calls that waited for the same query's evaluation in progress
  };
  CacheStats cache_stats() const;
  // Answers larger than this are not cached; the cache holds at most
  // kCacheMaxBytes (approximate) between two commits.
  static constexpr size_t kCacheMaxEntryBytes = 1 << 20;
  static constexpr size_t kCacheMaxBytes = 8 << 20;

  const kpi::Catalog& catalog() const { return catalog_; }

 private:
  // Compute, GetBatch and Range evaluate a second time, on a new snapshot,
  // when the first fails UNAVAILABLE (a peer left mid-answer).
  absl::StatusOr<KpiAnswer> Compute(const KpiQuery& q) const;
  absl::StatusOr<std::vector<absl::StatusOr<KpiAnswer>>> GetBatchOnce(const std::vector<KpiQuery>& queries) const;
  absl::StatusOr<RangeAnswer> RangeOnce(const KpiQuery& q, int64_t step, int64_t window_s) const;
  absl::StatusOr<KpiAnswer> ComputeOn(const KpiQuery& q, const PartialSnapshot& snapshot) const;
  // Keeps `answer` if the cache is still at (sequence, now) and has room.
  void CacheInsert(const std::string& key, const KpiAnswer& answer, uint64_t sequence, int64_t now) const;
  // As CacheInsert, with cache_->mu already held.
  void CacheInsertLocked(const std::string& key, const KpiAnswer& answer, uint64_t sequence, int64_t now) const;
  struct Cache;
  const kpi::Catalog& catalog_;
  const kpi::StateIds& ids_;
  const PartialSource& source_;
  const state::Clock& clock_;
  const QueryOptions options_;
  std::unique_ptr<Cache> cache_;
};

// Approximate bytes of an answer's values on the wire.
size_t AnswerBytes(const std::vector<GroupValue>& values);

}  // namespace kpistream::query
