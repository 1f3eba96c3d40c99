// A declared JSON source's paths (ingest/source_mapping.h) resolved in one
// pass over each object they step into, instead of one key scan per path:
// a record whose mapping reads fifteen of its twenty keys costs twenty key
// lookups, not fifteen scans of twenty. Keys are found through a table by
// (length, first byte); simdjson has no such lookup (dom::object::at_key
// scans), so this small piece is ours.
//
// A key present twice in one object: the last counts (as in protobuf's
// JSON parser, nlohmann::json, and most JSON readers).
//
// Thread-safety: a JsonPaths is immutable and shared; a Scratch belongs to
// one thread.
#pragma once

#include <simdjson.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kpistream::ingest {

class JsonPaths {
 public:
  // paths[slot]: the keys of the mapping path with that slot.
  explicit JsonPaths(const std::vector<const std::vector<std::string>*>& paths);

  // Per-record results, reused.
  struct Scratch {
    std::vector<simdjson::dom::element> values;   // by slot
    std::vector<uint8_t> found;                   // by slot: values[slot] is set
    std::vector<simdjson::dom::element> objects;  // by level
    std::vector<uint8_t> reached;                 // by level
  };
  // Fills scratch->values/found for every slot whose path is in `root`.
  void Resolve(simdjson::dom::element root, Scratch* scratch) const;

 private:
  // An object some paths step into: the root (level 0), or the value
  // under a key of another level (children have higher numbers).
  struct Level {
    std::vector<std::string> keys;
    std::vector<std::vector<int>> slots;  // by key: the paths ending at it
    std::vector<int> child;               // by key: the level under it, -1 none
    std::vector<int16_t> next;            // by key: the next key in its table bucket, -1 none
    std::array<int16_t, 16 * 256> head;   // bucket (length & 15, first byte) -> first key, -1 none
    int Find(std::string_view key) const;
    int Add(const std::string& key);
  };
  std::vector<Level> levels_;
  size_t slot_count_ = 0;
};

}  // namespace kpistream::ingest
