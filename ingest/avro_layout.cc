#include "ingest/avro_layout.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "ingest/source_mapping.h"

namespace kpistream::ingest {

namespace {

constexpr size_t kMaxAvroAllocation = size_t{64} << 20;

// The Avro C library (1.11.1) leaks on some malformed input: reading a
// string or bytes, it allocates the declared length and returns on a short
// read without freeing it. So every allocation made while a datum is read
// is tracked (on this thread), and after a failed read whatever the
// destroyed value did not free is freed here (AvroDatum::Read).
thread_local std::unordered_map<void*, size_t>* tracked = nullptr;

// The library keeps its last error in static buffers, unsynchronized (no
// thread-local storage in Debian's build): every call that may set it, and
// the reading of it, under one lock. Uncontended in kpid (one consumer
// thread; a reload compiles on another).
std::mutex avro_errors;

void* GuardedAllocate(void*, void* ptr, size_t, size_t nsize) {
  if (nsize == 0) {
    if (tracked != nullptr && ptr != nullptr) tracked->erase(ptr);
    std::free(ptr);
    return nullptr;
  }
  if (nsize > kMaxAvroAllocation) return nullptr;  // the library reports it as an error
  void* out = std::realloc(ptr, nsize);
  if (tracked != nullptr && out != nullptr) {
    if (ptr != nullptr) tracked->erase(ptr);
    (*tracked)[out] = nsize;
  }
  return out;
}

// The record schema a path step looks into: the schema itself, or the one
// record branch of a union (null and a record).
avro_schema_t RecordOf(avro_schema_t s) {
  if (is_avro_record(s)) return s;
  if (!is_avro_union(s)) return nullptr;
  avro_schema_t found = nullptr;
  for (size_t i = 0; i < avro_schema_union_size(s); ++i) {
    avro_schema_t b = avro_schema_union_branch(s, static_cast<int>(i));
    if (is_avro_record(b)) {
      if (found != nullptr) return nullptr;  // two records: which one depends on the datum
      found = b;
    }
  }
  return found;
}

// Whether a leaf of this schema can give a value of `kind`; a union can
// when any non-null branch can.
bool Converts(avro_schema_t s, SourceMapping::Kind kind) {
  if (is_avro_union(s)) {
    for (size_t i = 0; i < avro_schema_union_size(s); ++i) {
      avro_schema_t b = avro_schema_union_branch(s, static_cast<int>(i));
      if (!is_avro_null(b) && Converts(b, kind)) return true;
    }
    return false;
  }
  const bool number = is_avro_int32(s) || is_avro_int64(s) || is_avro_float(s) || is_avro_double(s);
  switch (kind) {
    case SourceMapping::Kind::kString:
      return is_avro_string(s) || is_avro_enum(s) || number || is_avro_boolean(s);
    case SourceMapping::Kind::kDouble:
    case SourceMapping::Kind::kInt32:
      return number || is_avro_string(s);
    case SourceMapping::Kind::kTime:
      return number || is_avro_string(s);
  }
  return false;
}

std::string_view KindName(SourceMapping::Kind kind) {
  switch (kind) {
    case SourceMapping::Kind::kString:
      return "text";
    case SourceMapping::Kind::kTime:
      return "a time";
    default:
      return "a number";
  }
}

}  // namespace

void GuardAvroAllocations() {
  static std::once_flag once;
  std::call_once(once, [] { avro_set_allocator(GuardedAllocate, nullptr); });
}

absl::StatusOr<std::shared_ptr<const AvroLayout>> AvroLayout::Compile(const SourceMapping& mapping,
                                                                      std::string_view schema_json, bool strict) {
  GuardAvroAllocations();
  auto layout = std::shared_ptr<AvroLayout>(new AvroLayout());
  std::lock_guard lock(avro_errors);
  if (avro_schema_from_json_length(schema_json.data(), schema_json.size(), &layout->schema_) != 0) {
    return absl::InvalidArgumentError(fmt::format("not an Avro schema: {}", avro_strerror()));
  }
  if (!is_avro_record(layout->schema_)) {
    return absl::InvalidArgumentError(
        fmt::format("the Avro schema is a {}, want a record", avro_schema_type_name(layout->schema_)));
  }
  layout->iface_ = avro_generic_class_from_schema(layout->schema_);
  if (layout->iface_ == nullptr) {
    return absl::InvalidArgumentError(fmt::format("Avro schema: {}", avro_strerror()));
  }
  const auto& paths = mapping.paths();
  layout->steps_.resize(paths.size());
  layout->missing_.resize(paths.size());
  for (size_t slot = 0; slot < paths.size(); ++slot) {
    const auto& use = paths[slot];
    avro_schema_t at = layout->schema_;
    std::string walked;
    bool missing = false;
    for (const auto& key : use.path->keys) {
      avro_schema_t record = RecordOf(at);
      if (record == nullptr) {
        if (strict) {
          return absl::InvalidArgumentError(fmt::format("field '{}': '{}' is an Avro {}, not a record", use.path->text,
                                                        walked, avro_schema_type_name(at)));
        }
        missing = true;
        break;
      }
      const int index = avro_schema_record_field_get_index(record, key.c_str());
      if (index < 0) {
        if (strict) {
          std::string fields;
          for (size_t i = 0; i < avro_schema_record_size(record); ++i) {
            fields += fmt::format("{}{}", i ? ", " : "", avro_schema_record_field_name(record, static_cast<int>(i)));
          }
          return absl::InvalidArgumentError(fmt::format("field '{}': the Avro record {} has no field '{}' (fields: {})",
                                                        use.path->text, avro_schema_name(record), key, fields));
        }
        missing = true;
        break;
      }
      layout->steps_[slot].push_back(index);
      at = avro_schema_record_field_get_by_index(record, index);
      walked += walked.empty() ? key : "." + key;
    }
    if (missing) {
      layout->steps_[slot].clear();
      layout->missing_[slot] = true;
      continue;
    }
    if (strict && !Converts(at, use.kind)) {
      return absl::InvalidArgumentError(fmt::format("field '{}' is an Avro {}, which cannot convert to {}",
                                                    use.path->text, avro_schema_type_name(at), KindName(use.kind)));
    }
  }
  return std::shared_ptr<const AvroLayout>(std::move(layout));
}

AvroLayout::~AvroLayout() {
  if (iface_ != nullptr) avro_value_iface_decref(iface_);
  if (schema_ != nullptr) avro_schema_decref(schema_);
}

AvroDatum::AvroDatum(std::shared_ptr<const AvroLayout> layout) : layout_(std::move(layout)) {
  avro_generic_value_new(layout_->iface(), &value_);
  reader_ = avro_reader_memory(nullptr, 0);
}

AvroDatum::~AvroDatum() {
  if (reader_ != nullptr) avro_reader_free(reader_);
  if (value_.iface != nullptr) avro_value_decref(&value_);
}

bool AvroDatum::Read(std::string_view payload, std::string* why) {
  if (value_.iface == nullptr || reader_ == nullptr) {
    *why = "cannot allocate an Avro value";
    return false;
  }
  avro_reader_memory_set_source(reader_, payload.data(), static_cast<int64_t>(payload.size()));
  avro_value_reset(&value_);
  allocations_.clear();
  std::lock_guard lock(avro_errors);
  tracked = &allocations_;
  const bool read = avro_value_read(reader_, &value_) == 0;
  if (!read) {
    *why = fmt::format("not Avro of the schema: {}", avro_strerror());
    // The value may hold some of the allocations: destroy it (still
    // tracking, so what it frees is forgotten), free what is left (the
    // library's leak), and start over with a fresh value.
    avro_value_decref(&value_);
    tracked = nullptr;
    for (const auto& [p, size] : allocations_) std::free(p);
    value_ = {};
    avro_generic_value_new(layout_->iface(), &value_);
    return false;
  }
  tracked = nullptr;
  // The memory reader has no position to ask (avro_reader_is_eof answers
  // for file readers only): a byte that can still be read is one too many.
  char extra = 0;
  if (avro_read(reader_, &extra, 1) == 0) {
    *why = "bytes left over after the Avro record: not a datum of this schema";
    return false;
  }
  return true;
}

PayloadValue AvroDatum::At(int slot) const {
  PayloadValue out;
  if (slot < 0 || layout_->missing(slot)) return out;
  avro_value_t v = value_;
  auto unwrap = [&]() -> bool {  // false: a null branch
    if (avro_value_get_type(&v) == AVRO_UNION) {
      avro_value_t branch;
      if (avro_value_get_current_branch(&v, &branch) != 0) return false;
      v = branch;
    }
    return avro_value_get_type(&v) != AVRO_NULL;
  };
  for (int index : layout_->steps(slot)) {
    if (!unwrap()) return out;
    if (avro_value_get_type(&v) != AVRO_RECORD) return out;  // another branch of the union
    avro_value_t child;
    if (avro_value_get_by_index(&v, index, &child, nullptr) != 0) return out;
    v = child;
  }
  if (!unwrap()) return out;
  switch (avro_value_get_type(&v)) {
    case AVRO_STRING: {
      const char* s = nullptr;
      size_t size = 0;
      avro_value_get_string(&v, &s, &size);
      out.text = std::string_view(s, size > 0 ? size - 1 : 0);  // size counts the NUL
      // Avro promises UTF-8 but the bytes are the producer's: checked, as
      // simdjson checks JSON text.
      if (simdjson::validate_utf8(out.text.data(), out.text.size())) {
        out.kind = PayloadValue::Kind::kString;
        out.type_name = "an Avro string";
      } else {
        out.kind = PayloadValue::Kind::kComposite;
        out.type_name = "an Avro string that is not UTF-8";
      }
      break;
    }
    case AVRO_ENUM: {
      int symbol = 0;
      avro_value_get_enum(&v, &symbol);
      // The library reads the index without checking it against the
      // symbols (1.11.1): checked here.
      const avro_schema_t schema = avro_value_get_schema(&v);
      if (symbol < 0 || symbol >= avro_schema_enum_number_of_symbols(schema)) {
        out.kind = PayloadValue::Kind::kComposite;
        out.type_name = "an Avro enum index out of range";
        break;
      }
      const char* name = avro_schema_enum_get(schema, symbol);
      out.kind = PayloadValue::Kind::kString;
      out.text = name != nullptr ? std::string_view(name) : std::string_view();
      out.type_name = "an Avro enum";
      break;
    }
    case AVRO_INT32: {
      int32_t x = 0;
      avro_value_get_int(&v, &x);
      out.kind = PayloadValue::Kind::kInt;
      out.i = x;
      out.type_name = "an Avro int";
      break;
    }
    case AVRO_INT64: {
      int64_t x = 0;
      avro_value_get_long(&v, &x);
      out.kind = PayloadValue::Kind::kInt;
      out.i = x;
      out.type_name = "an Avro long";
      break;
    }
    case AVRO_FLOAT: {
      float x = 0;
      avro_value_get_float(&v, &x);
      out.kind = PayloadValue::Kind::kDouble;
      out.d = x;
      out.type_name = "an Avro float";
      break;
    }
    case AVRO_DOUBLE: {
      double x = 0;
      avro_value_get_double(&v, &x);
      out.kind = PayloadValue::Kind::kDouble;
      out.d = x;
      out.type_name = "an Avro double";
      break;
    }
    case AVRO_BOOLEAN: {
      int x = 0;
      avro_value_get_boolean(&v, &x);
      out.kind = PayloadValue::Kind::kBool;
      out.b = x != 0;
      out.type_name = "an Avro boolean";
      break;
    }
    default:
      out.kind = PayloadValue::Kind::kComposite;
      out.type_name = avro_schema_type_name(avro_value_get_schema(&v));
      break;
  }
  return out;
}

}  // namespace kpistream::ingest
