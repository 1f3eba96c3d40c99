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
  avro_value_iface_t* iface() const { return iface_; }

 private:
  AvroLayout() = default;
  avro_schema_t schema_ = nullptr;
  avro_value_iface_t* iface_ = nullptr;
  std::vector<std::vector<int>> steps_;
  std::vector<bool> missing_;
};

// One record read with a layout, reused from record to record.
class AvroDatum {
 public:
  explicit AvroDatum(std::shared_ptr<const AvroLayout> layout);
  ~AvroDatum();
  AvroDatum(const AvroDatum&) = delete;
  AvroDatum& operator=(const AvroDatum&) = delete;

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
