// Routes decoded events to the measures they feed: the type set, the
// filter, the value to aggregate, the time the measure files the event
// under, and the event's values of the dimensions those measures group by.
//
// Thread-safety: immutable after construction; Route() is const and may be
// called from several threads, each with its own RoutedEvent.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kpi/catalog.h"
#include "kpi/event.h"

namespace kpistream::ingest {

// One contribution of an event to a measure.
struct Contribution {
  int measure = -1;     // index into Catalog::measures
  int64_t time_ms = 0;  // the time it is filed under: event_time, or the measure's `time` field
  double value = 0;     // numeric value (sum/min/max/avg/quantile/last), 0 for count
  uint64_t hash = 0;    // distinct: hash of the field (state::HashForSketch)
  bool time_fallback =
      false;  // the measure's `time` field was missing, invalid or after event_time: filed under event_time
};

// What Route produces for one event. Reused across events (no allocation
// once warm).
struct RoutedEvent {
  std::vector<Contribution> contributions;
  // The event's value of each Catalog::dimensions entry some contribution
  // groups by (indexed like Catalog::dimensions; others empty); valid until
  // the next Route. Values longer than Catalog::max_dimension_bytes are cut
  // (see CutDimensionValue) and listed in `cut`.
  std::vector<std::string_view> dim_values;
  std::vector<int> dims_used;  // the dimensions set in dim_values
  std::vector<int> cut;        // the dimensions whose value was cut
  std::string scratch;
  std::vector<std::pair<size_t, size_t>> spans;  // scratch offsets, by dimension
};

// A dimension value longer than max_bytes, cut to at most max_bytes: its
// first max_bytes - 17 bytes, backed off to a UTF-8 character boundary (a
// cut never splits a character, so a valid value stays valid), '~' and 16
// hex digits of a hash of the whole value, so distinct long values stay
// distinct (and the same value always maps to the same cut).
// REQUIRES: max_bytes >= kMinDimensionBytes (kpi/catalog.h).
std::string CutDimensionValue(std::string_view value, size_t max_bytes);

class Router {
 public:
  // REQUIRES: catalog outlives the router.
  explicit Router(const kpi::Catalog& catalog);

  // Fills *out (cleared first).
  void Route(const kpi::EventView& ev, RoutedEvent* out) const;

 private:
  struct Compiled {
    int index;
    std::bitset<64> types;  // enum numbers accepted; all set if no filter
    const kpi::MeasureDef* def;
  };
  const kpi::Catalog& catalog_;
  std::array<std::vector<Compiled>, kpi::kNumFamilies> by_family_;
};

}  // namespace kpistream::ingest
