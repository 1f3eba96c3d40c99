// Per-partition admission of an event's contributions: event-time lateness
// against the partition's watermark, and the group-by cardinality cap.
//
// Both depend only on the partition's input order and on state committed
// with its offsets (the newest event time and the admitted groups), so a
// replay after a crash makes the same decisions (invariant 4).
//
// Thread-safety: not thread-safe; owned by the consumer thread.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ingest/router.h"
#include "kpi/catalog.h"

namespace kpistream::ingest {

// The group key every dimension of an overflowing group collapses to.
inline constexpr std::string_view kOtherGroupValue = "__other__";

struct AdmitResult {
  int contributions = 0;  // before admission
  int late = 0;           // dropped as late
  int overflow = 0;       // mapped to __other__
  // Every contribution was late: the record is rejected with reason `late`.
  bool all_late() const { return contributions > 0 && late == contributions; }
};

class PartitionAdmission {
 public:
  static constexpr int64_t kNoEvents = std::numeric_limits<int64_t>::min();

  // Whether a group was admitted in a committed batch (a store lookup).
  using CommittedLookup = std::function<bool(uint32_t measure_id, std::string_view group_key)>;

  // REQUIRES: catalog outlives this object and its measure ids are set.
  // `committed` answers for groups not seen since this object was made, so
  // a restart loads only the per-measure counts, whatever the state size.
  PartitionAdmission(const kpi::Catalog& catalog, int64_t newest_event_ms, CommittedLookup committed);

  // Restores the committed number of admitted groups of a measure.
  void RestoreCount(uint32_t measure_id, uint32_t count);
  // Admitted-group counts per measure id (to commit with new groups).
  const absl::flat_hash_map<uint32_t, uint32_t>& counts() const { return counts_; }

  // Drops late contributions, maps groups over the cap to __other__, and
  // records newly admitted groups in *new_groups as (measure id, key).
  // Updates the watermark with the event time unless everything was late.
  AdmitResult Admit(int64_t time_ms, std::vector<Contribution>* contribs,
                    std::vector<std::pair<uint32_t, std::string>>* new_groups, std::vector<int>* late_measures,
                    std::vector<int>* overflow_measures);

  int64_t newest_event_ms() const { return newest_ms_; }

 private:
  const kpi::Catalog& catalog_;
  int64_t newest_ms_;
  CommittedLookup committed_;
  // Groups known admitted (a cache of the store plus this run's new ones).
  absl::flat_hash_map<uint32_t, absl::flat_hash_set<std::string>> admitted_;
  absl::flat_hash_map<uint32_t, uint32_t> counts_;
  std::vector<std::string> other_keys_;  // per measure index
};

}  // namespace kpistream::ingest
