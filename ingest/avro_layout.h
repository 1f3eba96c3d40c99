// Avro payloads for declared sources (ingest/source_mapping.h): a writer
// schema compiled against a mapping, so that each of the mapping's dotted
// paths is a list of record field indexes, resolved once per schema rather
// than looked up by name per record. Decoding uses the Apache Avro C
// library (Debian's libavro-dev): the binary encoding of the Avro 1.11
// specification, one datum per record without a container header.
//
// Path steps: a record field by name. A union of null and one record (the
// usual optional nested record) is stepped through; at run time a null
// branch reads as absent. Leaves convert as PayloadValue says: string and
// enum (its symbol) to text; int and long to integers; float and double to
// numbers; boolean; null to absent; anything else (bytes, fixed, arrays,
// maps, records) is no scalar.
//
// Thread-safety: an AvroLayout is immutable and shared; an AvroDatum (the
// value a record is read into) belongs to one thread.
#pragma once

#include <avro.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/payload_value.h"

namespace kpistream::ingest {

class SourceMapping;

class AvroLayout {
 public:
  // `schema_json`: the writer schema (Avro JSON; its top level a record).
  // `strict`: every mapped path must exist in the schema with a leaf type
  // that converts to its target (INVALID_ARGUMENT naming the field and the
  // schema's type); otherwise (schemas from a registry, checked per record)
  // a path the schema lacks reads as absent.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const AvroLayout>> Compile(const SourceMapping& mapping,
                                                                                 std::string_view schema_json,
                                                                                 bool strict);
  ~AvroLayout();
  AvroLayout(const AvroLayout&) = delete;
  AvroLayout& operator=(const AvroLayout&) = delete;

  // The field indexes of the mapping path with this slot
  // (SourceMapping::Path::slot); empty with missing() true when the schema
  // has no such field.
  const std::vector<int>& steps(int slot) const { return steps_[slot]; }
  bool missing(int slot) const { return missing_[slot]; }
  size_t slot_count() const { return steps_.size(); }
  avro_value_iface_t* iface() const { return iface_; }

  // The writer schema as AvroDatum walks it: one node per schema (named
  // types once, so recursive schemas are cycles), node 0 the top record.
  struct Node {
    avro_type_t type = AVRO_NULL;
    int64_t fixed_size = 0;            // fixed
    std::vector<std::string> symbols;  // enum
    std::vector<int> children;         // record fields, union branches, array items / map values (one)
    std::string type_name;             // avro_schema_type_name, for a composite's type
  };
  // The mapping's paths as a tree over field positions: node 0 is the top
  // record; fields[i] the position of its field i (-1: no path goes there);
  // slots the paths that end at this position.
  struct Position {
    std::vector<int> slots;
    std::vector<int> fields;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<Position>& positions() const { return positions_; }

 private:
  AvroLayout() = default;
  int NodeFor(avro_schema_t s, std::unordered_map<avro_schema_t, int>* seen);
  avro_schema_t schema_ = nullptr;
  avro_value_iface_t* iface_ = nullptr;
  std::vector<std::vector<int>> steps_;
  std::vector<bool> missing_;
  std::vector<Node> nodes_;
  std::vector<Position> positions_;
};

// One record read with a layout, reused from record to record: kpid's
// reader. It walks the Avro binary encoding (Avro 1.11 specification,
// "Binary Encoding") itself, keeping views of the mapped strings in the
// payload and skipping every other value. Hand-written because no
// maintained library reads a projection of a datum without building all
// of it: the Avro C library's generic reader (AvroGenericDatum below)
// allocates and copies every field first, 5x the protobuf decode per
// event, against the 2x this reader is held to. The library stays the
// schema parser and the reference: avro_source_fuzz checks that both
// readers accept the same payloads and give the same values.
//
// Refused (Read false, *why says where): a payload cut short; a varint
// over 10 bytes; a negative or oversized length; a union index outside
// the union; a datum nested deeper than 64 levels, or one whose arrays and
// maps hold more items than a step budget (16 per payload byte plus 4096)
// allows, so that a count of millions of zero-byte items cannot spin; and
// bytes left over after the datum. Where it differs from the library by
// design: those two bounds, and a fixed of size 0, which the
// specification allows and the library fails to allocate.
class AvroDatum {
 public:
  explicit AvroDatum(std::shared_ptr<const AvroLayout> layout);

  // Reads one binary-encoded datum that must fill `payload` exactly;
  // false with *why otherwise. Values (At) view `payload`: it must outlive
  // their use.
  bool Read(std::string_view payload, std::string* why);
  // The value at a path slot of the last datum read.
  PayloadValue At(int slot) const { return slot < 0 ? PayloadValue{} : values_[slot]; }

 private:
  bool Value(int node, int position, PayloadValue* capture, int depth);
  bool Long(int64_t* out);
  bool Fail(std::string why);
  std::shared_ptr<const AvroLayout> layout_;
  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
  int64_t budget_ = 0;
  std::string why_;
  std::vector<PayloadValue> values_;
};

// The same, through the Avro C library's generic reader: every field
// built into a generic value. The reference AvroDatum is checked against
// (tests and avro_source_fuzz).
class AvroGenericDatum {
 public:
  explicit AvroGenericDatum(std::shared_ptr<const AvroLayout> layout);
  ~AvroGenericDatum();
  AvroGenericDatum(const AvroGenericDatum&) = delete;
  AvroGenericDatum& operator=(const AvroGenericDatum&) = delete;

  // Reads one binary-encoded datum that must fill `payload` exactly;
  // false with *why (the library's reason, or trailing bytes) otherwise.
  bool Read(std::string_view payload, std::string* why);
  // The value at a path slot of the last datum read.
  PayloadValue At(int slot) const;

 private:
  std::shared_ptr<const AvroLayout> layout_;
  avro_value_t value_{};
  avro_reader_t reader_ = nullptr;
  std::unordered_map<void*, size_t> allocations_;  // made by the read in progress (Read)
};

// Installs an allocator into the Avro C library that refuses any single
// allocation over 64 MiB, so that a hostile length prefix fails the record
// instead of the process. Idempotent; called by AvroLayout::Compile.
void GuardAvroAllocations();

}  // namespace kpistream::ingest
