// Decodes Kafka record payloads into validated events: the project's own
// schemas (protobuf or proto3-JSON), or a declared source's JSON or Avro
// mapped onto them (ingest/source_mapping.h).
//
// Thread-safety: not thread-safe; use one Decoder per consumer thread. The
// decoder reuses its messages, so an EventView is valid until the next call.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "kpi/event.h"

namespace kpistream::ingest {

class SourceMapping;

// Why a record was rejected. Stable names: they are metric labels and DLQ
// header values.
enum class RejectReason : uint8_t {
  kNotDecodable = 0,  // not protobuf of the family's schema
  kBadJson,           // JSON syntax or type errors
  kUnknownType,       // event type missing or not known to this schema
  kMissingField,      // event_id or event_time missing
  kBadTimestamp,      // unparsable, or outside [2000-01-01, 2100-01-01)
  kBadValue,          // NaN, infinite or absurdly large numeric value
  kOversized,         // payload larger than the configured maximum
  kLate,              // older than every matching measure's allowed lateness
  kDuplicate,         // an event_id already applied from the same partition
  kEmpty,             // no payload: an empty record or a tombstone (null value)
  kFuture,            // event_time further ahead of kpid's clock than max_future
  kUnknownSchema,     // a schema id the registry does not have, or a schema that does not fit
  kCount_,
};
inline constexpr int kNumRejectReasons = static_cast<int>(RejectReason::kCount_);
std::string_view RejectReasonName(RejectReason r);

enum class PayloadFormat : uint8_t {
  kAuto = 0,  // JSON if the first non-blank byte is '{', else protobuf
  kProtobuf,
  kJson,
};

struct DecodeError {
  RejectReason reason;
  std::string detail;  // human-readable: what is wrong and where
  // Not the record's fault (the schema registry did not answer): it must
  // not be dead-lettered but read again later.
  bool retry = false;
};

struct DecoderOptions {
  size_t max_payload_bytes = 1 << 20;
  // Accepted event-time range, ms since the epoch.
  int64_t min_time_ms = 946684800000;   // 2000-01-01
  int64_t max_time_ms = 4102444800000;  // 2100-01-01
};

// What a mapping may read of the record besides its payload.
struct RecordMeta {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t timestamp_ms = -1;  // the record's timestamp (ms since the epoch); -1: none
};

class Decoder {
 public:
  explicit Decoder(DecoderOptions options = {});
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // On success fills *out and returns true; otherwise fills *err.
  bool Decode(kpi::Family family, std::string_view payload, PayloadFormat format, kpi::EventView* out,
              DecodeError* err);
  // The same for a declared source: the payload (JSON, parsed with
  // simdjson; or Avro binary, read with the Avro C library) is mapped onto
  // the mapping's family; the checks after decoding (type, id, time range,
  // values) are Decode's. With a schema registry the payload is in the
  // Confluent wire format and its schema is looked up by id: an unknown id
  // is unknown_schema; no answer from the registry sets err->retry.
  bool DecodeMapped(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta, kpi::EventView* out,
                    DecodeError* err);

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

// Silences protobuf's own logging (it logs on every malformed UTF-8 string);
// decode errors are reported through DecodeError instead. Call once at start.
void SilenceProtobufLogging();

}  // namespace kpistream::ingest
