#include "ingest/avro_layout.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <cstdlib>
#include <cstring>
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
// destroyed value did not free is freed here (AvroGenericDatum::Read).
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
// A named type used again (a recursive record) is a link to its definition.
avro_schema_t Resolve(avro_schema_t s) {
  while (s != nullptr && is_avro_link(s)) s = avro_schema_link_target(s);
  return s;
}

avro_schema_t RecordOf(avro_schema_t s) {
  s = Resolve(s);
  if (is_avro_record(s)) return s;
  if (!is_avro_union(s)) return nullptr;
  avro_schema_t found = nullptr;
  for (size_t i = 0; i < avro_schema_union_size(s); ++i) {
    avro_schema_t b = Resolve(avro_schema_union_branch(s, static_cast<int>(i)));
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
  s = Resolve(s);
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
  // The walk AvroDatum takes: the schema's nodes, and the paths' positions.
  std::unordered_map<avro_schema_t, int> seen;
  layout->NodeFor(layout->schema_, &seen);
  layout->positions_.emplace_back();
  for (size_t slot = 0; slot < paths.size(); ++slot) {
    if (layout->missing_[slot]) continue;
    int at = 0;
    for (int index : layout->steps_[slot]) {
      auto& fields = layout->positions_[at].fields;
      if (fields.size() <= static_cast<size_t>(index)) fields.resize(index + 1, -1);
      if (fields[index] < 0) {
        fields[index] = static_cast<int>(layout->positions_.size());
        layout->positions_.emplace_back();
      }
      at = layout->positions_[at].fields[index];
    }
    layout->positions_[at].slots.push_back(static_cast<int>(slot));
  }
  return std::shared_ptr<const AvroLayout>(std::move(layout));
}

int AvroLayout::NodeFor(avro_schema_t s, std::unordered_map<avro_schema_t, int>* seen) {
  s = Resolve(s);
  if (auto it = seen->find(s); it != seen->end()) return it->second;
  const int index = static_cast<int>(nodes_.size());
  (*seen)[s] = index;
  nodes_.emplace_back();
  nodes_[index].type = avro_typeof(s);
  nodes_[index].type_name = avro_schema_type_name(s);
  std::vector<int> children;
  switch (avro_typeof(s)) {
    case AVRO_RECORD:
      for (size_t i = 0; i < avro_schema_record_size(s); ++i) {
        children.push_back(NodeFor(avro_schema_record_field_get_by_index(s, static_cast<int>(i)), seen));
      }
      break;
    case AVRO_UNION:
      for (size_t i = 0; i < avro_schema_union_size(s); ++i) {
        children.push_back(NodeFor(avro_schema_union_branch(s, static_cast<int>(i)), seen));
      }
      break;
    case AVRO_ARRAY:
      children.push_back(NodeFor(avro_schema_array_items(s), seen));
      break;
    case AVRO_MAP:
      children.push_back(NodeFor(avro_schema_map_values(s), seen));
      break;
    case AVRO_ENUM:
      for (int i = 0; i < avro_schema_enum_number_of_symbols(s); ++i) {
        const char* name = avro_schema_enum_get(s, i);
        nodes_[index].symbols.emplace_back(name != nullptr ? name : "");
      }
      break;
    case AVRO_FIXED:
      nodes_[index].fixed_size = avro_schema_fixed_size(s);
      break;
    default:
      break;
  }
  nodes_[index].children = std::move(children);  // after the recursion: nodes_ may have moved
  return index;
}

namespace {

constexpr int kMaxAvroDepth = 64;

// Avro strings are UTF-8 by the specification, but the bytes are the
// producer's: checked, as simdjson checks JSON text.
void SetString(std::string_view text, PayloadValue* out) {
  out->text = text;
  if (simdjson::validate_utf8(text.data(), text.size())) {
    out->kind = PayloadValue::Kind::kString;
    out->type_name = "an Avro string";
  } else {
    out->kind = PayloadValue::Kind::kComposite;
    out->type_name = "an Avro string that is not UTF-8";
  }
}

}  // namespace

AvroDatum::AvroDatum(std::shared_ptr<const AvroLayout> layout)
    : layout_(std::move(layout)), values_(layout_->slot_count()) {}

bool AvroDatum::Fail(std::string why) {
  if (why_.empty()) why_ = std::move(why);
  return false;
}

// Zig-zag varint (the specification's int and long): at most 10 bytes.
bool AvroDatum::Long(int64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (p_ == end_) return Fail("cut short in a varint");
    const uint8_t b = *p_++;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *out = static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
      return true;
    }
  }
  return Fail("a varint longer than 10 bytes");
}

bool AvroDatum::Read(std::string_view payload, std::string* why) {
  p_ = reinterpret_cast<const uint8_t*>(payload.data());
  end_ = p_ + payload.size();
  budget_ = static_cast<int64_t>(payload.size()) * 16 + 4096;
  why_.clear();
  for (auto& v : values_) v = PayloadValue{};
  if (!Value(0, 0, nullptr, 0)) {
    *why = fmt::format("not Avro of the schema: {}", why_);
    return false;
  }
  if (p_ != end_) {
    *why = "bytes left over after the Avro record: not a datum of this schema";
    return false;
  }
  return true;
}

// Reads (or skips) one value of `node`. position >= 0: a place some
// mapping path reaches (its record fields may be read further);
// capture: set to the value as a scalar when some path ends here.
bool AvroDatum::Value(int node, int position, PayloadValue* capture, int depth) {
  if (depth > kMaxAvroDepth) return Fail(fmt::format("nested more than {} levels deep", kMaxAvroDepth));
  if (--budget_ < 0) return Fail("more values than the record's size allows");
  const AvroLayout::Node& n = layout_->nodes()[node];
  const auto remaining = [&] { return static_cast<uint64_t>(end_ - p_); };
  switch (n.type) {
    case AVRO_NULL:
      return true;  // absent
    case AVRO_BOOLEAN:
      if (p_ == end_) return Fail("cut short in a boolean");
      if (capture) {
        capture->kind = PayloadValue::Kind::kBool;
        capture->b = *p_ != 0;
        capture->type_name = "an Avro boolean";
      }
      ++p_;
      return true;
    case AVRO_INT32:
    case AVRO_INT64: {
      int64_t x = 0;
      if (!Long(&x)) return false;
      // An int's zig-zag form must fit 32 bits (the library refuses more).
      if (n.type == AVRO_INT32 && (x > INT32_MAX || x < INT32_MIN)) return Fail("a varint out of range for an int");
      if (capture) {
        capture->kind = PayloadValue::Kind::kInt;
        capture->i = x;
        capture->type_name = n.type == AVRO_INT32 ? "an Avro int" : "an Avro long";
      }
      return true;
    }
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
      const size_t size = n.type == AVRO_FLOAT ? 4 : 8;
      if (remaining() < size) return Fail(fmt::format("cut short in a {}", n.type_name));
      if (capture) {
        capture->kind = PayloadValue::Kind::kDouble;
        if (size == 4) {
          float f;
          std::memcpy(&f, p_, 4);  // little-endian, as the specification and x86
          capture->d = f;
          capture->type_name = "an Avro float";
        } else {
          std::memcpy(&capture->d, p_, 8);
          capture->type_name = "an Avro double";
        }
      }
      p_ += size;
      return true;
    }
    case AVRO_STRING:
    case AVRO_BYTES: {
      int64_t len = 0;
      if (!Long(&len)) return false;
      if (len < 0) return Fail(fmt::format("a negative {} length", n.type_name));
      if (static_cast<uint64_t>(len) > remaining()) return Fail(fmt::format("cut short in a {}", n.type_name));
      if (capture) {
        if (n.type == AVRO_STRING) {
          SetString(std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(len)), capture);
        } else {
          capture->kind = PayloadValue::Kind::kComposite;
          capture->type_name = n.type_name;
        }
      }
      p_ += len;
      return true;
    }
    case AVRO_FIXED:
      if (static_cast<uint64_t>(n.fixed_size) > remaining()) return Fail("cut short in a fixed");
      if (capture) {
        capture->kind = PayloadValue::Kind::kComposite;
        capture->type_name = n.type_name;
      }
      p_ += n.fixed_size;
      return true;
    case AVRO_ENUM: {
      int64_t index = 0;
      if (!Long(&index)) return false;
      // Read as a long and kept as an int, as the library does (an index
      // past 32 bits wraps; the wrapped index is then range-checked).
      const int32_t symbol = static_cast<int32_t>(static_cast<uint64_t>(index));
      if (capture) {
        if (symbol < 0 || static_cast<size_t>(symbol) >= n.symbols.size()) {
          capture->kind = PayloadValue::Kind::kComposite;
          capture->type_name = "an Avro enum index out of range";
        } else {
          capture->kind = PayloadValue::Kind::kString;
          capture->text = n.symbols[symbol];
          capture->type_name = "an Avro enum";
        }
      }
      return true;
    }
    case AVRO_UNION: {
      int64_t branch = 0;
      if (!Long(&branch)) return false;
      if (branch < 0 || branch >= static_cast<int64_t>(n.children.size())) {
        return Fail(fmt::format("union branch {} of {}", branch, n.children.size()));
      }
      return Value(n.children[branch], position, capture, depth + 1);
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
      if (capture) {
        capture->kind = PayloadValue::Kind::kComposite;
        capture->type_name = n.type_name;
      }
      // Blocks of items: a count (negative: its absolute value, then the
      // block's size in bytes), ended by a count of 0.
      for (;;) {
        int64_t count = 0;
        if (!Long(&count)) return false;
        if (count == 0) return true;
        if (count < 0) {
          if (count == INT64_MIN) return Fail("an item count out of range");
          count = -count;
          int64_t bytes = 0;  // a hint for skipping; not trusted, and unchecked as the library leaves it
          if (!Long(&bytes)) return false;
        }
        if (count > budget_) return Fail("more values than the record's size allows");
        for (int64_t i = 0; i < count; ++i) {
          if (n.type == AVRO_MAP) {  // the key: a string
            int64_t len = 0;
            if (!Long(&len)) return false;
            if (len < 0 || static_cast<uint64_t>(len) > remaining()) return Fail("a map key cut short");
            p_ += len;
          }
          if (!Value(n.children[0], -1, nullptr, depth + 1)) return false;
        }
      }
    }
    case AVRO_RECORD: {
      if (capture) {
        capture->kind = PayloadValue::Kind::kComposite;
        capture->type_name = n.type_name;
      }
      const auto* at = position >= 0 ? &layout_->positions()[position] : nullptr;
      for (size_t i = 0; i < n.children.size(); ++i) {
        const int child = at != nullptr && i < at->fields.size() ? at->fields[i] : -1;
        if (child < 0) {
          if (!Value(n.children[i], -1, nullptr, depth + 1)) return false;
          continue;
        }
        const auto& slots = layout_->positions()[child].slots;
        PayloadValue v;
        if (!Value(n.children[i], child, slots.empty() ? nullptr : &v, depth + 1)) return false;
        for (int slot : slots) values_[slot] = v;
      }
      return true;
    }
    default:
      return Fail(fmt::format("an Avro {} value, which this reader does not know", n.type_name));
  }
}

AvroLayout::~AvroLayout() {
  if (iface_ != nullptr) avro_value_iface_decref(iface_);
  if (schema_ != nullptr) avro_schema_decref(schema_);
}

AvroGenericDatum::AvroGenericDatum(std::shared_ptr<const AvroLayout> layout) : layout_(std::move(layout)) {
  avro_generic_value_new(layout_->iface(), &value_);
  reader_ = avro_reader_memory(nullptr, 0);
}

AvroGenericDatum::~AvroGenericDatum() {
  if (reader_ != nullptr) avro_reader_free(reader_);
  if (value_.iface != nullptr) avro_value_decref(&value_);
}

bool AvroGenericDatum::Read(std::string_view payload, std::string* why) {
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

PayloadValue AvroGenericDatum::At(int slot) const {
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
