// In-memory dirty partials between two commits. Owned by the consumer thread.
//
// Thread-safety: not thread-safe (single owner: the consumer thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "ingest/router.h"
#include "kpi/catalog.h"
#include "state/aggregate.h"
#include "state/store.h"

namespace kpistream::ingest {

class Accumulator {
 public:
  // REQUIRES: catalog outlives the accumulator and its measure ids are set.
  explicit Accumulator(const kpi::Catalog& catalog) : catalog_(catalog) {}

  void Add(const Contribution& c, uint64_t source, int64_t time_ms);

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
  absl::flat_hash_map<std::string, state::Partial> dirty_;
  std::string key_;  // scratch
  size_t bytes_ = 0;
};

}  // namespace kpistream::ingest
