// Routes decoded events to the measures they feed: type filter, group key
// and the value to aggregate.
//
// Thread-safety: immutable after construction; Route() is const and may be
// called from several threads with their own scratch strings.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <string>
#include <vector>

#include "kpi/catalog.h"
#include "kpi/event.h"

namespace kpistream::ingest {

// One contribution of an event to a measure.
struct Contribution {
  int measure = -1;        // index into Catalog::measures
  std::string_view group;  // encoded group key (state/keys.h), valid until next Route
  double value = 0;        // numeric value (sum/min/max/avg), 0 for count
  uint64_t hash = 0;       // distinct: hash of the field (state::HashForSketch)
};

class Router {
 public:
  explicit Router(const kpi::Catalog& catalog);

  // Appends the event's contributions to *out (cleared first). Group keys
  // point into *scratch.
  void Route(const kpi::EventView& ev, std::string* scratch, std::vector<Contribution>* out) const;

 private:
  struct Compiled {
    int index;
    std::bitset<64> types;  // enum numbers accepted; all set if no filter
    const kpi::MeasureDef* def;
  };
  std::array<std::vector<Compiled>, kpi::kNumFamilies> by_family_;
};

}  // namespace kpistream::ingest
