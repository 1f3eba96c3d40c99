// The state keyspaces and their key encodings, declared once.
//
// Column family "agg" (mergeable partials, RocksDB merge operator):
//   tier(u8) measure_id(u32 BE) source(u64 BE) bucket(i64 BE, sign-flipped)
//   group_key
// where source = stream_id << 32 | partition, bucket = start of the bucket in
// seconds since the epoch, and group_key is the measure's group-by values,
// each as varint length + bytes. Big-endian + sign flip makes byte order equal
// numeric order, so a (measure, partition) series is contiguous and sorted by
// time: a window is one range scan per partition.
//
// Column family "offsets": source(u64 BE) -> next offset (i64 LE) and the
//   partition's newest event time in ms (i64 LE; its watermark). Written in
//   the same WriteBatch as the partials (invariant 1).
// Column family "groups": 'V' source(u64 BE) dimension_id(u32 BE) value ->
//   "" for every dimension value kept under the dimension's cap on the
//   source, and 'N' source(u64 BE) dimension_id(u32 BE) -> count (u32 LE) of
//   them; both written in the same batch as the partials that first used the
//   value. Restart reads only the counts; values are looked up when first
//   seen. ('G' and 'C' keys, per-measure group caps, are from releases
//   before 0.2 and no longer read.)
// Column family "meta": "<kind>/<name>" -> id (u32 LE), stable ids for topic,
//   measure and dimension ("<family>.<name>") names; "measure.shape/<name>"
//   -> the shape that owns a measure's plain id, and "measure/<name>@<shape>"
//   -> the id of each later shape (Store::SeriesIdFor).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kpistream::state {

enum class Keyspace : uint8_t { kAgg = 0, kOffsets = 1, kMeta = 2, kGroups = 3, kAlerts = 4, kEventIds = 5 };
inline constexpr const char* kKeyspaceNames[] = {"agg", "offsets", "meta", "groups", "alerts", "event_ids"};

// Roll-up tiers. The finest tier's width is the measure's bucket width.
enum class Tier : uint8_t { kFine = 0, kHour = 1, kDay = 2 };
inline constexpr int64_t kHourSeconds = 3600;
inline constexpr int64_t kDaySeconds = 86400;

inline uint64_t SourceId(uint32_t stream_id, int32_t partition) {
  return (uint64_t{stream_id} << 32) | static_cast<uint32_t>(partition);
}
inline uint32_t StreamOf(uint64_t source) { return static_cast<uint32_t>(source >> 32); }
inline int32_t PartitionOf(uint64_t source) { return static_cast<int32_t>(source & 0xffffffffu); }

// Prefix shared by every key of a (tier, measure, source) series.
inline constexpr size_t kSeriesPrefixSize = 1 + 4 + 8;
inline constexpr size_t kAggKeyFixedSize = kSeriesPrefixSize + 8;

std::string SeriesPrefix(Tier tier, uint32_t measure_id, uint64_t source);
std::string AggKey(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket, std::string_view group_key);

struct AggKeyParts {
  Tier tier;
  uint32_t measure_id;
  uint64_t source;
  int64_t bucket;
  std::string_view group_key;  // points into the decoded key
};
// Returns false if the key is malformed.
bool ParseAggKey(std::string_view key, AggKeyParts* out);

std::string OffsetKey(uint64_t source);
std::string KeptValueKey(uint64_t source, uint32_t dimension_id, std::string_view value);
std::string KeptCountPrefix(uint64_t source);
std::string KeptCountKey(uint64_t source, uint32_t dimension_id);
bool ParseOffsetKey(std::string_view key, uint64_t* source);
// An applied event's id, for de-duplication: source then the id's bytes.
std::string EventIdKey(uint64_t source, std::string_view event_id);

// Group keys: the ordered values of a measure's group-by dimensions.
void AppendGroupValue(std::string* group_key, std::string_view value);
// Returns false if malformed.
bool SplitGroupKey(std::string_view group_key, std::vector<std::string_view>* values);

// Fixed-width big-endian helpers (exposed for tests).
void PutU32BE(std::string* out, uint32_t v);
void PutU64BE(std::string* out, uint64_t v);
uint32_t GetU32BE(const char* p);
uint64_t GetU64BE(const char* p);
inline uint64_t FlipSign(int64_t v) { return static_cast<uint64_t>(v) ^ (uint64_t{1} << 63); }
inline int64_t UnflipSign(uint64_t v) { return static_cast<int64_t>(v ^ (uint64_t{1} << 63)); }

}  // namespace kpistream::state
