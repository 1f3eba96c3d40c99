// A scalar read from a payload at a mapping's path, whatever the payload's
// format (JSON through simdjson, Avro through the Avro C library): what the
// declared-source mapping converts onto an event's fields.
//
// Views (text) point into the decoder's buffers: valid until the next record.
#pragma once

#include <cstdint>
#include <string_view>

namespace kpistream::ingest {

struct PayloadValue {
  enum class Kind : uint8_t {
    kAbsent,     // no such field, or null
    kString,     // text (Avro: string or enum symbol)
    kInt,        // i
    kUint,       // u (JSON integers above INT64_MAX)
    kDouble,     // d
    kBool,       // b
    kComposite,  // an object, array, record, map, bytes or fixed: not a scalar
    kTime,       // i: nanoseconds since the epoch (a google.protobuf.Timestamp)
  };
  Kind kind = Kind::kAbsent;
  std::string_view text;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  std::string_view type_name;  // for errors: "a string", "an array", "Avro bytes", ...

  bool absent() const { return kind == Kind::kAbsent; }
};

}  // namespace kpistream::ingest
