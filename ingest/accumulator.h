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

  // Start of the bucket of width `width` holding t (seconds), flooring
  // towards -inf.
  static int64_t BucketStart(int64_t t, int64_t width) {
    int64_t q = t / width;
    if (t % width != 0 && t < 0) --q;
    return q * width;
  }
  static int64_t FloorDiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if (a % b != 0 && ((a < 0) != (b < 0))) --q;
    return q;
  }

 private:
  const kpi::Catalog& catalog_;
  absl::flat_hash_map<std::string, state::Partial> dirty_;
  std::string key_;  // scratch
  size_t bytes_ = 0;
};

}  // namespace kpistream::ingest
