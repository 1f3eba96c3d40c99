// Per-partition admission: event-time lateness against the partition's
// event-time watermark, and the cap on distinct dimension values.
//
// The cap is per (partition, dimension), shared by every measure grouping by
// the dimension: the first max_values distinct values of a dimension seen on
// a partition are kept, later ones become "__other__" for every measure at
// once. So the measures of a KPI (clicks and impressions for CTR) always
// agree on which groups they keep, and a ratio over "__other__" compares
// like with like. Only the overflowing dimension collapses: CTR by channel
// stays exact when campaign ids overflow.
//
// Both decisions depend only on the partition's input order and on state
// committed with its offsets (the newest event time and the kept values),
// so a replay after a crash decides the same (invariant 4).
//
// Thread-safety: not thread-safe; owned by the consumer thread.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kpi/catalog.h"

namespace kpistream::ingest {

// The value a dimension takes beyond its cap.
inline constexpr std::string_view kOtherGroupValue = "__other__";

class PartitionAdmission {
 public:
  static constexpr int64_t kNoEvents = std::numeric_limits<int64_t>::min();

  // Whether a value was kept in a committed batch (a store lookup).
  using CommittedLookup = std::function<bool(uint32_t dimension_id, std::string_view value)>;

  // REQUIRES: catalog and ids outlive this object. `committed` answers for
  // values not seen since this object was made, so a restart loads only the
  // per-dimension counts, whatever the state size.
  PartitionAdmission(const kpi::Catalog& catalog, const kpi::StateIds& ids, int64_t newest_event_ms,
                     CommittedLookup committed);

  // Restores the committed number of kept values of a dimension (by id).
  void RestoreCount(uint32_t dimension_id, uint32_t count);
  // Kept-value counts per dimension id (to commit with new values).
  const absl::flat_hash_map<uint32_t, uint32_t>& counts() const { return counts_; }

  // Whether an event at event_time_ms is late for a measure: older than the
  // partition's newest event time minus the measure's lateness.
  bool Late(int measure, int64_t event_time_ms) const;
  // Advances the watermark with an applied event's time.
  void Observe(int64_t event_time_ms) {
    if (event_time_ms > newest_ms_) newest_ms_ = event_time_ms;
  }
  // The value a dimension (Catalog::dimensions index) keeps: `value`, or
  // kOtherGroupValue past the cap. A value kept for the first time is
  // appended to *new_values as (dimension id, value).
  std::string_view Admit(int dimension, std::string_view value,
                         std::vector<std::pair<uint32_t, std::string>>* new_values, bool* overflow);

  int64_t newest_event_ms() const { return newest_ms_; }
  // Replaces the watermark (recovery of a watermark stamped in the future).
  void ResetNewest(int64_t newest_event_ms) { newest_ms_ = newest_event_ms; }

 private:
  const kpi::Catalog& catalog_;
  const kpi::StateIds& ids_;
  int64_t newest_ms_;
  CommittedLookup committed_;
  // Values known kept (a cache of the store plus this run's new ones).
  absl::flat_hash_map<uint32_t, absl::flat_hash_set<std::string>> kept_;
  absl::flat_hash_map<uint32_t, uint32_t> counts_;
};

}  // namespace kpistream::ingest
