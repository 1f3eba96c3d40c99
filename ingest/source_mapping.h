// Declared sources: a topic whose records are in the user's own JSON or Avro shape,
// mapped field by field onto one family's event (kpistream.events.v1), so
// that kpid reads the topics users already have without a translation job
// (as ksqlDB's `CREATE STREAM ... WITH (VALUE_FORMAT='JSON')` or Flink
// SQL's JSON format do). Configured in kpid.yaml under `kafka.sources`
// (services/config.h; docs/SOURCES.md has worked examples):
//
//   - topic: ads.events
//     family: campaign
//     format: json
//     event_id: id                         # a field; omitted: <topic>/<partition>/<offset>
//     event_time: {field: ts, unit: ms}    # or {field: at, format: rfc3339}, {record_timestamp: true}
//     type: {field: kind, values: {imp: impression, click: click}}   # or {constant: click}
//     fields:
//       campaign_id: cid                   # a field, by dotted path for nested objects
//       channel: {field: meta.channel, default: unknown}
//       cost: {field: cost_micros, scale: 0.000001}
//       region: {constant: emea}
//
// Targets are the family message's fields by their proto name (channel,
// cost, origin_time, ...). Values convert as follows:
//   string fields  a JSON string as is; an integer, a number or a boolean in
//                  its text form; null or absent: the default, else empty;
//   numeric fields a JSON number, or a string holding one, times `scale`;
//                  int32 fields must come out integral and in range;
//   time fields    a number of `unit` (s, ms, us, ns; default ms) since the
//                  epoch, or a string in `format` (rfc3339, the default, or
//                  an absl::ParseTime format such as "%Y-%m-%d %H:%M:%S",
//                  read as UTC).
// A record that does not fit (a value of the wrong type, a required field
// absent, a type value the mapping does not name) is rejected with the
// decoder's reasons (bad_value, missing_field, unknown_type,
// bad_timestamp, bad_json), the detail naming the field.
//
// Thread-safety: a compiled SourceMapping is immutable and shared by every
// partition of its topic.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <mutex>

#include "absl/status/statusor.h"
#include "ingest/schema_registry.h"
#include "kpi/event.h"

namespace google::protobuf {
class FieldDescriptor;
class FileDescriptorProto;
}  // namespace google::protobuf

namespace kpistream::ingest {

class AvroLayout;
class JsonPaths;
class ProtoLayout;

// Where a time comes from and how it is written.
struct TimeSpec {
  bool record_timestamp = false;   // the Kafka record's timestamp instead of a field
  std::string field;               // dotted path
  std::string unit = "ms";         // numbers: s, ms, us, ns
  std::string format = "rfc3339";  // strings: rfc3339 or an absl::ParseTime format (UTC)
};

// One target field of the event.
struct ValueSpec {
  std::string field;                    // dotted path; empty with `constant`
  std::optional<std::string> constant;  // a fixed value (converted as a payload string would be)
  std::optional<std::string> fallback;  // `default`: when the field is absent or null
  double scale = 1;                     // numeric targets: value * scale
  bool required = false;                // absent (and no default): missing_field
  TimeSpec time;                        // time targets (origin_time)
};

// A source as configured (services/config.cc reads it from YAML).
struct SourceSpec {
  std::string topic;
  kpi::Family family = kpi::Family::kCampaign;
  std::string format = "json";  // json or avro
  // The writer schema, for avro without a registry: its text (read from
  // schema_file by the config reader).
  std::string schema_text;
  std::string schema_file;  // for errors
  // protobuf: a serialized FileDescriptorSet (read from descriptor_set_file
  // by the config reader) and the full name of the records' message.
  std::string descriptor_set;
  std::string descriptor_set_file;  // for errors
  std::string message;
  // A schema registry (url set): records are in the Confluent wire format
  // and their schemas are fetched by id (format avro: the Avro writer
  // schema; format json: a JSON Schema, whose id must exist).
  SchemaRegistryOptions registry;
  std::string event_id_field;  // empty: derived from topic, partition and offset
  TimeSpec event_time;
  // The event type: from a field (its values mapped through `type_values`
  // when given, else matched to the family's type names), or a constant.
  std::string type_field;
  std::string type_constant;
  std::map<std::string, std::string> type_values;  // payload value -> type name
  std::map<std::string, ValueSpec> fields;         // target field name -> where its value comes from
};

// Formats a declared source can have; the names of others are known so
// that the error can say so.
inline constexpr const char* kSourceFormats[] = {"json", "avro", "protobuf"};

// Checks one part of a spec, for configuration errors at its line: the
// error text, or nullopt when fine.
std::optional<std::string> CheckSourceFormat(const std::string& format);
std::optional<std::string> CheckTargetField(kpi::Family family, const std::string& target);
// A type name of the family: short ("click") or full ("CAMPAIGN_CLICK"),
// any case. Its enum number, or the error text.
absl::StatusOr<int> ResolveTypeName(kpi::Family family, const std::string& name);
std::optional<std::string> CheckTimeSpec(const TimeSpec& t);
// A constant or default for a numeric target: a number (times `scale`, a
// whole one in range for 32-bit integer fields).
std::optional<std::string> CheckNumber(const std::string& text, double scale, bool int32);

// The compiled form the decoder runs.
class SourceMapping {
 public:
  // INVALID_ARGUMENT naming the part that is wrong (the config reader has
  // checked each part at its line already; this is the last word).
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const SourceMapping>> Compile(const SourceSpec& spec);

  const SourceSpec& spec() const { return spec_; }
  kpi::Family family() const { return spec_.family; }

  // Compiled parts (for the decoder).
  enum class Kind : uint8_t { kString, kDouble, kInt32, kTime };
  struct Path {
    std::vector<std::string> keys;  // the dotted path, split
    std::string text;               // as written, for errors
    int slot = -1;                  // index into paths(); -1 when empty (a constant, the record timestamp)
  };
  struct Target {
    const google::protobuf::FieldDescriptor* field = nullptr;
    Kind kind = Kind::kString;
    Path path;
    const ValueSpec* spec = nullptr;
  };
  const std::vector<Target>& targets() const { return targets_; }
  const Path& event_id_path() const { return event_id_; }
  const Path& event_time_path() const { return event_time_; }
  const Path& type_path() const { return type_; }
  int type_constant() const { return type_constant_; }  // 0: from the field
  // Every non-empty path the mapping reads, by slot, with the kind of value
  // it must give (event_id and type: kString; event_time: kTime).
  struct PathUse {
    const Path* path;
    Kind kind;
  };
  const std::vector<PathUse>& paths() const { return paths_; }

  // Avro with a schema given: its layout (null otherwise).
  const std::shared_ptr<const AvroLayout>& avro_layout() const { return avro_layout_; }
  // json: the paths as one pass over each object resolves them.
  const JsonPaths* json_paths() const { return json_paths_.get(); }
  // protobuf: the compiled message type (null otherwise).
  const std::shared_ptr<const ProtoLayout>& proto_layout() const { return proto_layout_; }
  // With a registry (null otherwise).
  SchemaRegistryClient* registry() const { return registry_.get(); }
  // What a registered writer schema gives: for avro its layout, for
  // protobuf its .proto parsed (to resolve the records' message indexes),
  // for json nothing but its existence. Errors: the registry's
  // (UNAVAILABLE: retry; NOT_FOUND), or INVALID_ARGUMENT when the schema is
  // not of the source's format or does not parse. Thread-safe; cached per
  // id.
  struct Registered {
    std::shared_ptr<const AvroLayout> avro;
    std::shared_ptr<const google::protobuf::FileDescriptorProto> proto_file;
  };
  absl::StatusOr<Registered> LayoutFor(int32_t schema_id) const;
  // The type of a payload value (through `values`, or a type name: short
  // or full, lower or upper case); 0 when the mapping does not name it.
  int TypeOf(std::string_view value) const;

 private:
  SourceSpec spec_;
  std::vector<Target> targets_;
  Path event_id_, event_time_, type_;
  std::vector<PathUse> paths_;
  std::shared_ptr<const AvroLayout> avro_layout_;
  std::shared_ptr<const JsonPaths> json_paths_;
  std::shared_ptr<const ProtoLayout> proto_layout_;
  std::shared_ptr<SchemaRegistryClient> registry_;
  mutable std::mutex layouts_mu_;
  mutable std::map<int32_t, absl::StatusOr<Registered>> layouts_;
  int type_constant_ = 0;
  std::map<std::string, int, std::less<>> type_values_;  // payload value -> enum number
};

}  // namespace kpistream::ingest
