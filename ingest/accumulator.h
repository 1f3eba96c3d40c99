// In-memory dirty partials between two commits. Owned by the consumer thread.
//
// Thread-safety: not thread-safe (single owner: the consumer thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "ingest/router.h"
#include "kpi/catalog.h"
#include "state/aggregate.h"
#include "state/store.h"

namespace kpistream::ingest {

class Accumulator {
 public:
  // REQUIRES: catalog and ids outlive the accumulator.
  Accumulator(const kpi::Catalog& catalog, const kpi::StateIds& ids);

  // Adds a contribution of `source` to the fine bucket of c.time_ms, in the
  // group whose encoded key (state::AppendGroupValue) is group_key.
  void Add(const Contribution& c, uint64_t source, std::string_view group_key);

  // Writes every dirty partial, at every roll-up tier of its measure, into
  // *batch, then forgets them.
  void Flush(state::WriteBatch* batch);
  void Clear() {
    dirty_.clear();
    bytes_ = 0;
  }

  size_t DirtyEntries() const { return dirty_.size(); }
  // Approximate heap bytes held (for the dirty-memory bound, invariant 6).
  size_t ApproxBytes() const { return bytes_; }

 private:
  const kpi::Catalog& catalog_;
  const kpi::StateIds& ids_;
  std::vector<const kpi::MeasureDef*> by_id_;  // measure by state id
  absl::flat_hash_map<std::string, state::Partial> dirty_;
  std::string key_;  // scratch
  size_t bytes_ = 0;
};

}  // namespace kpistream::ingest
