// Realistic synthetic events for the three families, deterministic for a
// seed, plus the exact KPI values they must produce (ground truth).
//
// Thread-safety: not thread-safe; one Generator per thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ingest/decoder.h"
#include "kpi/catalog.h"
#include "kpi/event.h"
#include "state/aggregate.h"

namespace kpistream::gen {

// kFlatJson and kNestedJson: users' own shapes (gen/user_shapes.h).
enum class Format { kProtobuf, kJson, kMixed, kFlatJson, kNestedJson, kAvro };

struct GenOptions {
  uint64_t seed = 1;
  // Event times: evenly spread over [start_ms, start_ms + span_ms) with
  // jitter, in generation order. With live = true, times are the wall clock.
  int64_t start_ms = 0;
  int64_t span_ms = 3600 * 1000;
  uint64_t count = 1000;
  bool live = false;
  Format format = Format::kProtobuf;
  // kAvro: the schema id of each family's AvroSchemaFor in the registry
  // (user_shapes.h), by kpi::Family.
  int32_t avro_schema_ids[3] = {0, 0, 0};
  // Every Nth record is a bad record (0 = none), cycling through BadKind.
  uint64_t bad_every = 0;
  int accounts = 300;
  int users_per_account = 12;
  int campaigns = 40;
};

// The kinds of bad record the generator mixes in, and the reason kpid must
// reject each with.
// Hostile records kpigen mixes in (--bad-every), each with the reason kpid
// must reject it for.
enum class BadKind : uint8_t {
  kGarbage = 0,        // random bytes: neither protobuf nor JSON
  kTruncatedProtobuf,  // a valid event cut short
  kJsonWrongType,      // a number field holding a string
  kUnknownType,        // JSON with an event type no schema knows
  kNanValue,           // protobuf, the family's amount field NaN
  kInfJson,            // JSON, the amount field "Infinity"
  kHugeValue,          // protobuf, the amount field 1e300
  kTime1970,           // event_time in 1970
  kTime2200,           // event_time in 2200
  kInvalidUtf8Proto,   // a string field with invalid UTF-8, protobuf
  kInvalidUtf8Json,    // the same in JSON
  kDeepJson,           // an unknown field nested 100 000 arrays deep
  kMissingId,          // no event_id
  kUnknownEnumProto,   // protobuf with type = 999 (proto3 keeps unknown enum numbers)
  kDuplicate,          // the previous good record again, same key and bytes (a producer retry)
  kCount_
};
ingest::RejectReason ExpectedReason(BadKind k);

struct Record {
  kpi::Family family;
  std::string key;
  std::string payload;
  int64_t time_ms = 0;
  bool bad = false;
  BadKind bad_kind = BadKind::kGarbage;
  // The event (for good records), valid until the next call to Next().
  const google::protobuf::Message* event = nullptr;
  int type = 0;
};

class Generator {
 public:
  explicit Generator(GenOptions options);
  ~Generator();
  // Produces record number i (i = 0, 1, 2, ... in order).
  void Next(Record* out);
  uint64_t produced() const { return index_; }

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
  uint64_t index_ = 0;
};

// Ground truth: the exact value of every KPI of a catalog over each of the
// given windows ending at `end_s`, computed from the generated events
// directly (exact distinct counts and quantiles, no sketches, no Kafka, no
// state store). Windows resolve to each measure's buckets exactly as kpid
// documents (docs/ARCHITECTURE.md, "Windows").
class Truth {
 public:
  Truth(const kpi::Catalog& catalog, int64_t end_s, std::vector<std::string> windows);
  ~Truth();
  void Add(const Record& r);
  // Writes:  window_start <s> / window_end <s> / records <n> / good <n> /
  //          rejected <reason> <n> /
  //          kpi <name> <window> <value|none> <exact|approx>
  // "approx" marks KPIs whose kpid value comes from a sketch (distinct,
  // quantile) and is only within the sketch's error bound. Values: %.17g.
  std::string Render() const;

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::gen
