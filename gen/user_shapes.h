// Events in users' own JSON shapes, and the kpid source mappings that read
// them back (ingest/source_mapping.h): what the declared-sources tests,
// benchmarks and docs use to show that a user's topic gives the same KPIs
// as the project's own schema.
//
//   flat    {"id": "e1", "ts": 1764460800123, "kind": "click", "campaign_id": "c7",
//            "channel": "search", "cost": 0.12}
//           ids, dimensions and values at the top level under their field
//           names, times as epoch milliseconds, the type by its short name;
//   nested  {"messageId": "e1", "timestamp": "2026-11-30T00:00:00.123Z",
//            "event": "Click", "context": {"campaign_id": "c7"},
//            "properties": {"channel": "search", "cost": 0.12}}
//           the shape of common product-analytics SDKs (a track call):
//           entity ids (*_id) under context, the rest under properties,
//           times in RFC 3339, the type as a display name mapped back by
//           `values`.
//   avro    a record per family (AvroSchemaFor): id, ts (long,
//           timestamp-millis), kind (an enum of the short type names in
//           upper case), the entity ids (*_id) in a nested record `keys`,
//           every other field a union of null and its type (times as
//           epoch-millisecond longs); in the Confluent wire format, its
//           schema id registered in a schema registry.
// Fields at their default (proto3: absent) are left out (Avro: null), as
// producers do.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include <google/protobuf/message.h>

#include "ingest/source_mapping.h"
#include "kpi/event.h"

namespace kpistream::gen {

enum class UserShape { kFlat, kNested, kAvro };

// The event (a kpistream.events.v1 message of `family`) in `shape`.
std::string ToUserJson(kpi::Family family, const google::protobuf::Message& event, UserShape shape);

// The Avro schema (JSON) of the avro shape for `family`.
std::string AvroSchemaFor(kpi::Family family);
// The event in the avro shape, framed in the Confluent wire format with
// `schema_id` (the id AvroSchemaFor(family) has in the registry).
std::string ToUserAvro(kpi::Family family, const google::protobuf::Message& event, int32_t schema_id);

// The declared source that reads `topic` in `shape` as `family`.
// `registry_url`: the avro shape's schema registry.
ingest::SourceSpec SourceSpecFor(kpi::Family family, UserShape shape, const std::string& topic,
                                 const std::string& registry_url = "");
// A source as a `kafka.sources` list entry of kpid.yaml (YAML, indented for
// the list under `kafka:`).
std::string SourceYaml(const ingest::SourceSpec& source);

}  // namespace kpistream::gen
