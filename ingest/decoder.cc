#include "ingest/decoder.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <google/protobuf/descriptor.h>
#include <simdjson.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "ingest/avro_layout.h"
#include "ingest/json_paths.h"
#include "ingest/payload_value.h"
#include "ingest/proto_layout.h"
#include "ingest/rfc3339.h"
#include "ingest/schema_registry.h"
#include "ingest/source_mapping.h"
#include "kpistream/events/v1/events.pb.h"
#include "state/aggregate.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

struct Decoder::Rep {
  DecoderOptions options;
  events::v1::CampaignEvent campaign;
  events::v1::ProductEvent product;
  events::v1::CrmEvent crm;
  pb::util::JsonParseOptions json_options;
  simdjson::dom::parser json;             // declared sources; reused: its buffers grow to the largest record
  std::string text;                       // scratch for values converted to text
  nlohmann::json fallback;                // declared JSON sources: documents simdjson cannot hold
  JsonPaths::Scratch json_paths_scratch;  // declared JSON sources: the paths of the record being read
  // Avro sources: a datum per writer schema, reused from record to record.
  std::map<const AvroLayout*, std::unique_ptr<AvroDatum>> avro;
  // Protobuf sources: a message per source.
  std::map<const ProtoLayout*, std::unique_ptr<ProtoDatum>> proto;

  // The project's own schema in proto3 JSON, with simdjson.
  bool DecodeProtoJson(kpi::Family family, std::string_view payload, pb::Message* msg, DecodeError* err);
  bool DecodeJson(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta, pb::Message* msg,
                  DecodeError* err);
  bool DecodeProto(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta, pb::Message* msg,
                   DecodeError* err);
  bool DecodeAvro(const SourceMapping& mapping, const std::shared_ptr<const AvroLayout>& layout,
                  std::string_view payload, const RecordMeta& meta, pb::Message* msg, DecodeError* err);

  // The checks every decoded event passes, whatever its format.
  // `values_checked`: the caller checked every numeric value it set.
  bool Finish(kpi::Family family, pb::Message* msg, kpi::EventView* out, DecodeError* err, bool values_checked = false);

  pb::Message* MessageFor(kpi::Family f) {
    switch (f) {
      case kpi::Family::kCampaign:
        return &campaign;
      case kpi::Family::kProduct:
        return &product;
      case kpi::Family::kCrm:
        return &crm;
    }
    return nullptr;
  }
};

Decoder::Decoder(DecoderOptions options) : rep_(std::make_unique<Rep>()) {
  rep_->options = options;
  // Forward compatibility: fields added by a newer producer are ignored, and
  // an enum name this schema does not know decodes as UNSPECIFIED, which is
  // then rejected as unknown_type below.
  rep_->json_options.ignore_unknown_fields = true;
}
Decoder::~Decoder() = default;

std::string_view RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kNotDecodable:
      return "not_decodable";
    case RejectReason::kBadJson:
      return "bad_json";
    case RejectReason::kUnknownType:
      return "unknown_type";
    case RejectReason::kMissingField:
      return "missing_field";
    case RejectReason::kBadTimestamp:
      return "bad_timestamp";
    case RejectReason::kBadValue:
      return "bad_value";
    case RejectReason::kOversized:
      return "oversized";
    case RejectReason::kDuplicate:
      return "duplicate";
    case RejectReason::kLate:
      return "late";
    case RejectReason::kEmpty:
      return "empty";
    case RejectReason::kFuture:
      return "future";
    case RejectReason::kUnknownSchema:
      return "unknown_schema";
    case RejectReason::kCount_:
      break;
  }
  return "unknown";
}

namespace {

// Events are flat; a deeper document is hostile (a stack-depth attack on
// any recursive parser). simdjson's parsers stop at this depth; before the
// recursive fallback parsers (protobuf's, nlohmann's) JsonDepth checks it.
constexpr int kMaxJsonDepth = 64;

// The nesting depth of a JSON text, without parsing it: linear, brackets
// inside strings ignored; stops counting past kMaxJsonDepth.
int JsonDepth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonDepth) return max_depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

bool IsJson(std::string_view payload) {
  for (char c : payload) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{';
  }
  return false;
}

// Checks every numeric field of the message: finite and within the range the
// fixed-point sums can hold.
bool CheckValues(const pb::Message& msg, std::string* bad_field) {
  const auto* d = msg.GetDescriptor();
  const auto* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_DOUBLE) continue;
    const double v = r->GetDouble(msg, f);
    if (!std::isfinite(v) || std::fabs(v) > state::kMaxAbsValue) {
      *bad_field = fmt::format("{}={}", f->name(), v);
      return false;
    }
  }
  return true;
}

}  // namespace

bool Decoder::Decode(kpi::Family family, std::string_view payload, PayloadFormat format, kpi::EventView* out,
                     DecodeError* err) {
  if (payload.empty()) {
    *err = {RejectReason::kEmpty, "the record has no payload (an empty value or a tombstone)"};
    return false;
  }
  if (payload.size() > rep_->options.max_payload_bytes) {
    *err = {RejectReason::kOversized,
            fmt::format("payload is {} bytes, the maximum is {}", payload.size(), rep_->options.max_payload_bytes)};
    return false;
  }
  pb::Message* msg = rep_->MessageFor(family);
  msg->Clear();
  const bool json = format == PayloadFormat::kJson || (format == PayloadFormat::kAuto && IsJson(payload));
  if (json) {
    if (!rep_->DecodeProtoJson(family, payload, msg, err)) return false;
  } else if (!msg->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    *err = {RejectReason::kNotDecodable,
            fmt::format("not a valid {} protobuf message ({} bytes)", msg->GetTypeName(), payload.size())};
    return false;
  }

  return rep_->Finish(family, msg, out, err);
}

bool Decoder::Rep::Finish(kpi::Family family, pb::Message* msg, kpi::EventView* out, DecodeError* err,
                          bool values_checked) {
  const auto* d = msg->GetDescriptor();
  const auto* r = msg->GetReflection();
  const auto* type_f = d->FindFieldByNumber(3);
  const int type = r->GetEnumValue(*msg, type_f);
  if (type == 0 || type_f->enum_type()->FindValueByNumber(type) == nullptr) {
    *err = {RejectReason::kUnknownType,
            fmt::format("event type {} is not a known {} type", type, type_f->enum_type()->name())};
    return false;
  }
  const auto* id_f = d->FindFieldByNumber(1);
  const auto* time_f = d->FindFieldByNumber(2);
  const std::string& event_id = r->GetStringReference(*msg, id_f, nullptr);
  if (event_id.empty()) {
    *err = {RejectReason::kMissingField, "event_id is missing"};
    return false;
  }
  if (!r->HasField(*msg, time_f)) {
    *err = {RejectReason::kMissingField, "event_time is missing"};
    return false;
  }
  const auto& ts = static_cast<const pb::Timestamp&>(r->GetMessage(*msg, time_f));
  if (ts.seconds() < options.min_time_ms / 1000 || ts.seconds() >= options.max_time_ms / 1000 || ts.nanos() < 0 ||
      ts.nanos() > 999999999) {
    *err = {RejectReason::kBadTimestamp, fmt::format("event_time {}s is outside the accepted range", ts.seconds())};
    return false;
  }
  std::string bad;
  if (!values_checked && !CheckValues(*msg, &bad)) {
    *err = {RejectReason::kBadValue, fmt::format("numeric value out of range: {}", bad)};
    return false;
  }
  out->family = family;
  out->type = type;
  out->time_ms = ts.seconds() * 1000 + ts.nanos() / 1000000;
  out->msg = msg;
  out->event_id = event_id;
  return true;
}

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

std::string_view TypeName(element_type t) {
  switch (t) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
    default:
      return "a number";
  }
}

// A JSON document as the mapping reads it.
struct JsonDoc {
  const JsonPaths::Scratch* resolved;  // the mapping's paths, resolved in one pass (JsonPaths)
  // The value at a path; absent when a key is absent, a step is not an
  // object, or the value is null.
  PayloadValue At(const SourceMapping::Path& path) const {
    PayloadValue out;
    if (path.slot < 0 || !resolved->found[path.slot]) return out;
    const element e = resolved->values[path.slot];
    out.type_name = TypeName(e.type());
    switch (e.type()) {
      case element_type::NULL_VALUE:
        break;
      case element_type::STRING:
        out.kind = PayloadValue::Kind::kString;
        out.text = e.get_string().value_unsafe();
        break;
      case element_type::INT64:
        out.kind = PayloadValue::Kind::kInt;
        out.i = e.get_int64().value_unsafe();
        break;
      case element_type::UINT64:
        out.kind = PayloadValue::Kind::kUint;
        out.u = e.get_uint64().value_unsafe();
        break;
      case element_type::DOUBLE:
        out.kind = PayloadValue::Kind::kDouble;
        out.d = e.get_double().value_unsafe();
        break;
      case element_type::BOOL:
        out.kind = PayloadValue::Kind::kBool;
        out.b = e.get_bool().value_unsafe();
        break;
      default:
        out.kind = PayloadValue::Kind::kComposite;
        break;
    }
    return out;
  }
};

// A protobuf message of the user's schema as the mapping reads it.
struct ProtoDoc {
  const ProtoDatum* datum;
  PayloadValue At(const SourceMapping::Path& path) const { return datum->At(path.slot); }
};

// A JSON document simdjson could not hold (integers past 64 bits), parsed
// by nlohmann::json instead, as the mapping reads it.
struct NlohmannDoc {
  const nlohmann::json* root;
  PayloadValue At(const SourceMapping::Path& path) const {
    PayloadValue out;
    const nlohmann::json* e = root;
    for (const auto& key : path.keys) {
      if (!e->is_object()) return out;
      const auto it = e->find(key);
      if (it == e->end()) return out;
      e = &*it;
    }
    switch (e->type()) {
      case nlohmann::json::value_t::string:
        out.kind = PayloadValue::Kind::kString;
        out.text = e->get_ref<const std::string&>();
        out.type_name = "a string";
        break;
      case nlohmann::json::value_t::number_integer:
        out.kind = PayloadValue::Kind::kInt;
        out.i = e->get<int64_t>();
        out.type_name = "a number";
        break;
      case nlohmann::json::value_t::number_unsigned:  // every non-negative integer, in nlohmann
        if (e->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)) {
          out.kind = PayloadValue::Kind::kInt;  // as simdjson reads it
          out.i = static_cast<int64_t>(e->get<uint64_t>());
        } else {
          out.kind = PayloadValue::Kind::kUint;
          out.u = e->get<uint64_t>();
        }
        out.type_name = "a number";
        break;
      case nlohmann::json::value_t::number_float:
        out.kind = PayloadValue::Kind::kDouble;
        out.d = e->get<double>();
        out.type_name = "a number";
        break;
      case nlohmann::json::value_t::boolean:
        out.kind = PayloadValue::Kind::kBool;
        out.b = e->get<bool>();
        out.type_name = "a boolean";
        break;
      case nlohmann::json::value_t::null:
        break;
      default:
        out.kind = PayloadValue::Kind::kComposite;
        out.type_name = e->is_array() ? "an array" : "an object";
        break;
    }
    return out;
  }
};

// An Avro datum as the mapping reads it.
struct AvroDoc {
  const AvroDatum* datum;
  PayloadValue At(const SourceMapping::Path& path) const { return datum->At(path.slot); }
};

// A scalar as text: strings as they are, numbers and booleans in their
// JSON form. False for anything else.
bool AsText(const PayloadValue& v, std::string* out) {
  out->clear();
  switch (v.kind) {
    case PayloadValue::Kind::kString:
      out->assign(v.text);
      return true;
    case PayloadValue::Kind::kInt:
      fmt::format_to(std::back_inserter(*out), "{}", v.i);
      return true;
    case PayloadValue::Kind::kUint:
      fmt::format_to(std::back_inserter(*out), "{}", v.u);
      return true;
    case PayloadValue::Kind::kDouble:
      fmt::format_to(std::back_inserter(*out), "{}", v.d);
      return true;
    case PayloadValue::Kind::kBool:
      out->assign(v.b ? "true" : "false");
      return true;
    default:
      return false;
  }
}

// A number, or a string holding one. nullopt otherwise.
std::optional<double> AsNumber(const PayloadValue& v) {
  switch (v.kind) {
    case PayloadValue::Kind::kInt:
      return static_cast<double>(v.i);
    case PayloadValue::Kind::kUint:
      return static_cast<double>(v.u);
    case PayloadValue::Kind::kDouble:
      return v.d;
    case PayloadValue::Kind::kString: {
      double d = 0;
      if (absl::SimpleAtod(absl::string_view(v.text.data(), v.text.size()), &d)) return d;
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

int64_t NanosPerUnit(const std::string& unit) {
  if (unit == "s") return 1000000000;
  if (unit == "us") return 1000;
  if (unit == "ns") return 1;
  return 1000000;  // ms
}

// Reads a time per `t` into *ts from `v` (the value at `path`, unused with
// record_timestamp); why not otherwise (missing_field when the time is
// absent, bad_timestamp when it is not a time).
std::optional<DecodeError> ReadTime(const PayloadValue& v, const SourceMapping::Path& path, const TimeSpec& t,
                                    const RecordMeta& meta, pb::Timestamp* ts) {
  auto bad = [](std::string detail) { return DecodeError{RejectReason::kBadTimestamp, std::move(detail)}; };
  // Far outside any accepted event time (the decoder's range is checked
  // after), but small enough that no later arithmetic overflows.
  constexpr int64_t kMaxAbsSeconds = int64_t{1} << 40;
  int64_t total_ns = 0;
  if (t.record_timestamp) {
    if (meta.timestamp_ms < 0) return DecodeError{RejectReason::kMissingField, "the record has no timestamp"};
    if (meta.timestamp_ms > INT64_MAX / 1000000) {  // past 2262: nanoseconds overflow
      return bad(fmt::format("the record timestamp {} ms is out of range", meta.timestamp_ms));
    }
    total_ns = meta.timestamp_ms * 1000000;
  } else {
    if (v.absent()) return DecodeError{RejectReason::kMissingField, fmt::format("field '{}' is missing", path.text)};
    const bool is_string = v.kind == PayloadValue::Kind::kString;
    const std::string_view text = v.text;
    const bool custom_format = t.format != "rfc3339";
    int64_t n = 0;
    // A string of digits is a number of `unit`, unless a format of the
    // user's own (which may be all digits, like %Y%m%d) says how to read it.
    if (v.kind == PayloadValue::Kind::kTime) {
      total_ns = v.i;  // a time already (range checked by the reader)
    } else if (v.kind == PayloadValue::Kind::kInt ||
               (is_string && !custom_format && absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &n))) {
      if (!is_string) n = v.i;
      const int64_t k = NanosPerUnit(t.unit);
      if (n > INT64_MAX / k || n < INT64_MIN / k) {
        return bad(fmt::format("field '{}': {} {} is out of range", path.text, n, t.unit));
      }
      total_ns = n * k;
    } else if (is_string) {
      if (!custom_format) {
        if (const auto fast = ParseCommonRfc3339(text)) {
          if (fast->seconds > kMaxAbsSeconds || fast->seconds < -kMaxAbsSeconds) {
            return bad(fmt::format("field '{}': '{}' is out of range", path.text, text.substr(0, 100)));
          }
          ts->set_seconds(fast->seconds);
          ts->set_nanos(fast->nanos);
          return std::nullopt;
        }
      }
      absl::Time at;
      std::string why;
      const absl::string_view input(text.data(), text.size());
      const bool ok = custom_format ? absl::ParseTime(t.format, input, absl::UTCTimeZone(), &at, &why)
                                    : absl::ParseTime(absl::RFC3339_full, input, &at, &why);
      if (!ok) {
        return bad(fmt::format("field '{}': '{}' is not a time in format {} ({})", path.text, text.substr(0, 100),
                               t.format, why));
      }
      // absl reads "infinite-future" and "infinite-past" as times.
      const int64_t s = absl::ToUnixSeconds(at);
      if (at == absl::InfiniteFuture() || at == absl::InfinitePast() || s > kMaxAbsSeconds || s < -kMaxAbsSeconds) {
        return bad(fmt::format("field '{}': '{}' is out of range", path.text, text.substr(0, 100)));
      }
      ts->set_seconds(s);
      ts->set_nanos(static_cast<int32_t>((at - absl::FromUnixSeconds(s)) / absl::Nanoseconds(1)));
      return std::nullopt;
    } else if (const auto d = AsNumber(v)) {
      const double ns = *d * static_cast<double>(NanosPerUnit(t.unit));
      if (!std::isfinite(ns) || std::fabs(ns) > 9.2e18) {
        return bad(fmt::format("field '{}': {} is out of range", path.text, *d));
      }
      // A fractional number is rounded to the microsecond: binary doubles
      // cannot hold nanoseconds since the epoch (1764460800.123 s would read
      // as ...122.9998 ms).
      total_ns = std::llround(ns / 1000) * 1000;
    } else {
      return bad(
          fmt::format("field '{}' is {}, want a time (a number of {} or a string)", path.text, v.type_name, t.unit));
    }
  }
  int64_t s = total_ns / 1000000000, nanos = total_ns % 1000000000;
  if (nanos < 0) {
    --s;
    nanos += 1000000000;
  }
  ts->set_seconds(s);
  ts->set_nanos(static_cast<int32_t>(nanos));
  return std::nullopt;
}

// Maps one parsed payload onto *msg (cleared) per the mapping; the checks
// after (type known, id and time present, time range) are Finish's.
template <class Doc>
bool MapPayload(const SourceMapping& mapping, const Doc& doc, const RecordMeta& meta, pb::Message* msg,
                std::string& text, DecodeError* err) {
  const auto* d = msg->GetDescriptor();
  const auto* r = msg->GetReflection();

  // event_id: a field, or the record's position.
  if (mapping.event_id_path().keys.empty()) {
    text.clear();
    fmt::format_to(std::back_inserter(text), "{}/{}/{}", meta.topic, meta.partition, meta.offset);
  } else {
    const PayloadValue v = doc.At(mapping.event_id_path());
    if (v.absent()) {
      *err = {RejectReason::kMissingField,
              fmt::format("event_id: field '{}' is missing", mapping.event_id_path().text)};
      return false;
    }
    if (!AsText(v, &text)) {
      *err = {RejectReason::kBadValue, fmt::format("event_id: field '{}' is {}, want a string or a number",
                                                   mapping.event_id_path().text, v.type_name)};
      return false;
    }
  }
  r->SetString(msg, d->FindFieldByNumber(1), text);

  // event_time
  auto* ts = static_cast<pb::Timestamp*>(r->MutableMessage(msg, d->FindFieldByNumber(2)));
  const PayloadValue tv =
      mapping.spec().event_time.record_timestamp ? PayloadValue{} : doc.At(mapping.event_time_path());
  if (auto e = ReadTime(tv, mapping.event_time_path(), mapping.spec().event_time, meta, ts)) {
    *err = {e->reason, "event_time: " + e->detail};
    return false;
  }

  // type
  int type = mapping.type_constant();
  if (type == 0) {
    const PayloadValue v = doc.At(mapping.type_path());
    if (v.absent()) {
      *err = {RejectReason::kUnknownType, fmt::format("type: field '{}' is missing", mapping.type_path().text)};
      return false;
    }
    if (!AsText(v, &text)) {
      *err = {RejectReason::kUnknownType,
              fmt::format("type: field '{}' is {}, want a string", mapping.type_path().text, v.type_name)};
      return false;
    }
    type = mapping.TypeOf(text);
    if (type == 0) {
      *err = {RejectReason::kUnknownType,
              fmt::format("type: field '{}' is '{}', which the source's mapping does not name",
                          mapping.type_path().text, text.substr(0, 200))};
      return false;
    }
  }
  r->SetEnumValue(msg, d->FindFieldByNumber(3), type);

  // The other fields.
  for (const auto& t : mapping.targets()) {
    const ValueSpec& vs = *t.spec;
    if (t.kind == SourceMapping::Kind::kTime) {
      const PayloadValue v = vs.time.record_timestamp ? PayloadValue{} : doc.At(t.path);
      if (!vs.time.record_timestamp && v.absent() && !vs.required) continue;  // optional: absent
      auto* mts = static_cast<pb::Timestamp*>(r->MutableMessage(msg, t.field));
      if (auto e = ReadTime(v, t.path, vs.time, meta, mts)) {
        *err = {e->reason, fmt::format("{}: {}", t.field->name(), e->detail)};
        return false;
      }
      continue;
    }
    PayloadValue v;
    if (!vs.constant) v = doc.At(t.path);
    const std::string* given = vs.constant ? &*vs.constant : (v.absent() && vs.fallback ? &*vs.fallback : nullptr);
    if (v.absent() && given == nullptr) {
      if (vs.required) {
        *err = {RejectReason::kMissingField, fmt::format("{}: field '{}' is missing", t.field->name(), t.path.text)};
        return false;
      }
      continue;
    }
    if (t.kind == SourceMapping::Kind::kString) {
      if (!given && v.kind == PayloadValue::Kind::kString) {
        r->SetString(msg, t.field, std::string(v.text));  // one copy, moved in
        continue;
      }
      if (given) {
        text = *given;
      } else if (!AsText(v, &text)) {
        *err = {RejectReason::kBadValue, fmt::format("{}: field '{}' is {}, want a string or a number", t.field->name(),
                                                     t.path.text, v.type_name)};
        return false;
      }
      r->SetString(msg, t.field, text);
      continue;
    }
    double x = 0;
    if (given) {
      if (!absl::SimpleAtod(*given, &x)) {
        *err = {RejectReason::kBadValue, fmt::format("{}: the default '{}' is not a number", t.field->name(), *given)};
        return false;
      }
    } else if (const auto n = AsNumber(v)) {
      x = *n;
    } else {
      *err = {RejectReason::kBadValue,
              fmt::format("{}: field '{}' is {}, want a number", t.field->name(), t.path.text,
                          v.kind == PayloadValue::Kind::kString ? "a string that is no number" : v.type_name)};
      return false;
    }
    x *= vs.scale;
    if (t.kind == SourceMapping::Kind::kDouble) {
      if (!std::isfinite(x) || std::fabs(x) > state::kMaxAbsValue) {
        *err = {RejectReason::kBadValue, fmt::format("numeric value out of range: {}={}", t.field->name(), x)};
        return false;
      }
      r->SetDouble(msg, t.field, x);
    } else if (x == std::floor(x) && x >= INT32_MIN && x <= INT32_MAX) {
      r->SetInt32(msg, t.field, static_cast<int32_t>(x));
    } else {
      *err = {RejectReason::kBadValue,
              fmt::format("{}: {} is not a whole number in the range of a 32-bit integer", t.field->name(), x)};
      return false;
    }
  }
  return true;
}

}  // namespace

namespace {

// A family's fields by both names proto3 JSON allows: the proto name
// (event_id) and the JSON name (eventId).
using FieldsByName = absl::flat_hash_map<std::string, const pb::FieldDescriptor*>;
const FieldsByName& JsonFields(kpi::Family family) {
  static const auto* all = [] {
    auto* out = new std::array<FieldsByName, kpi::kNumFamilies>();
    for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
      const auto* d = kpi::FamilyDescriptor(f);
      for (int i = 0; i < d->field_count(); ++i) {
        (*out)[static_cast<int>(f)][d->field(i)->name()] = d->field(i);
        (*out)[static_cast<int>(f)][d->field(i)->json_name()] = d->field(i);
      }
    }
    return out;
  }();
  return (*all)[static_cast<int>(family)];
}

// A family's event types by name (CAMPAIGN_CLICK), for JSON's enum strings.
using TypesByName = absl::flat_hash_map<std::string, int>;
const TypesByName& JsonTypes(kpi::Family family) {
  static const auto* all = [] {
    auto* out = new std::array<TypesByName, kpi::kNumFamilies>();
    for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
      const auto* e = kpi::FamilyDescriptor(f)->FindFieldByName("type")->enum_type();
      for (int i = 0; i < e->value_count(); ++i)
        (*out)[static_cast<int>(f)][e->value(i)->name()] = e->value(i)->number();
    }
    return out;
  }();
  return (*all)[static_cast<int>(family)];
}

std::string_view Text(std::string_view s) { return s.substr(0, 100); }

// Numbers in strings as protobuf's JSON parser reads them (DataPiece's
// StringToNumber): no space at either end, then the whole string through
// strtod (which also takes hexadecimal, "inf" and "nan") or, for integers,
// an optional sign and decimal digits only.
bool ProtoStrtod(std::string_view s, double* out) {
  if (s.empty() || s.front() == ' ' || s.back() == ' ') return false;
  const std::string text(s.substr(0, s.find('\0')));  // protobuf reads it as a C string
  char* end = nullptr;
  *out = std::strtod(text.c_str(), &end);
  if (end == text.c_str()) return false;
  while (*end != '\0' && absl::ascii_isspace(static_cast<unsigned char>(*end))) ++end;  // as safe_strtod
  // Only "Infinity", "-Infinity" and "NaN" (read before) may be non-finite.
  return *end == '\0' && std::isfinite(*out);
}
bool ProtoStrtoInt(std::string_view s, int64_t* out) {
  size_t i = s.empty() || (s[0] != '-' && s[0] != '+') ? 0 : 1;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j) {
    if (s[j] < '0' || s[j] > '9') return false;
  }
  return absl::SimpleAtoi(absl::string_view(s.data(), s.size()), out);
}

}  // namespace

// The proto3 JSON mapping (https://protobuf.dev/programming-guides/json/)
// of the project's flat event messages, read with simdjson instead of
// protobuf's JsonStringToMessage (27x the protobuf decode; this is ~2x).
// Written by hand because no kept library maps JSON onto protobuf through
// a fast parser. It accepts what protobuf's parser accepts for these
// messages, with kpid's options (unknown fields and unknown enum names
// ignored): either field name; null as the default; numbers or numeric
// strings for numeric fields, "NaN" and "[-]Infinity" for doubles (then
// refused as bad_value); an enum by name or number; a Timestamp as an RFC
// 3339 string. What it refuses is bad_json, or bad_timestamp for a time it
// cannot read, as before. tools/fuzz/decoder_fuzz holds it to protobuf's
// parser in both directions.
bool Decoder::Rep::DecodeProtoJson(kpi::Family family, std::string_view payload, pb::Message* msg, DecodeError* err) {
  if (json.max_depth() != static_cast<size_t>(kMaxJsonDepth)) {
    if (json.allocate(64 * 1024, kMaxJsonDepth) != simdjson::SUCCESS) {
      *err = {RejectReason::kOversized, "cannot allocate the JSON parser's buffers"};
      return false;
    }
  }
  // simdjson is not recursive, and stops at kMaxJsonDepth: a document
  // nested 100 000 levels deep is refused without a deep stack.
  simdjson::dom::element root;
  if (auto e = json.parse(payload.data(), payload.size()).get(root); e != simdjson::SUCCESS) {
    if (e == simdjson::DEPTH_ERROR || JsonDepth(payload) > kMaxJsonDepth) {
      *err = {RejectReason::kBadJson, fmt::format("JSON nested more than {} levels deep", kMaxJsonDepth)};
      return false;
    }
    // What simdjson refuses, protobuf's parser decides, as it did before
    // simdjson: RFC 8259 numbers simdjson cannot hold (integers past 64
    // bits), and what protobuf's parser tolerates beyond RFC 8259 (unknown
    // escapes, raw control characters). Rare, so its cost does not matter.
    msg->Clear();
    auto st = pb::util::JsonStringToMessage(pb::StringPiece(payload.data(), payload.size()), msg, json_options);
    if (!st.ok()) {
      // protobuf's parser reports a timestamp it cannot read as "Invalid
      // google.protobuf.Timestamp value ...": a bad timestamp, not bad JSON.
      const std::string message(st.message());
      const bool time = message.find("google.protobuf.Timestamp") != std::string::npos;
      *err = {time ? RejectReason::kBadTimestamp : RejectReason::kBadJson,
              fmt::format("not JSON: {}", message.substr(0, 300))};
      return false;
    }
    return true;
  }
  simdjson::dom::object obj;
  if (root.get(obj) != simdjson::SUCCESS) {
    *err = {RejectReason::kBadJson, "the payload is not a JSON object"};
    return false;
  }
  const auto& fields = JsonFields(family);
  const auto* r = msg->GetReflection();
  auto bad = [&](const pb::FieldDescriptor* f, std::string_view want, simdjson::dom::element v) {
    *err = {RejectReason::kBadJson,
            fmt::format("field {}: {}, want {}", f->json_name(), Text(simdjson::minify(v)), want)};
    return false;
  };
  for (const auto field : obj) {
    if (field.key.empty()) {  // protobuf's parser: "Proto fields must have a name."
      *err = {RejectReason::kBadJson, "a key is empty: proto3 JSON fields must have a name"};
      return false;
    }
    const auto it = fields.find(absl::string_view(field.key.data(), field.key.size()));
    if (it == fields.end()) continue;           // unknown: a newer producer's field
    const pb::FieldDescriptor* f = it->second;  // given twice: the last one counts, as in protobuf's parser
    const simdjson::dom::element v = field.value;
    if (v.is_null()) continue;
    std::string_view s;
    const bool is_string = v.get(s) == simdjson::SUCCESS;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (!is_string) return bad(f, "a string", v);
        r->SetString(msg, f, std::string(s));
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
        double x = 0;
        if (v.is_number()) {
          x = v.get_double().value_unsafe();
        } else if (!is_string) {
          return bad(f, "a number", v);
        } else if (s == "NaN") {
          x = std::numeric_limits<double>::quiet_NaN();
        } else if (s == "Infinity" || s == "-Infinity") {
          x = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
        } else if (!ProtoStrtod(s, &x)) {
          return bad(f, "a number", v);
        }
        r->SetDouble(msg, f, x);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        int64_t n = 0;
        if (v.is_int64()) {
          n = v.get_int64().value_unsafe();
        } else if (v.is_double()) {
          const double d = v.get_double().value_unsafe();
          if (d != std::floor(d) || std::fabs(d) > 1e10) return bad(f, "a whole number", v);
          n = static_cast<int64_t>(d);
        } else if (!is_string || !ProtoStrtoInt(s, &n)) {
          return bad(f, "a whole number", v);
        }
        if (n < INT32_MIN || n > INT32_MAX) return bad(f, "a 32-bit integer", v);
        r->SetInt32(msg, f, static_cast<int32_t>(n));
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        // A name; or a number, also as a string if it names a declared
        // value. An unknown name (or undeclared number string) is ignored,
        // left UNSPECIFIED, as protobuf's parser does with
        // ignore_unknown_fields; rejected as unknown_type after. (The only
        // enum of the event messages is their type.)
        int64_t n = 0;
        if (is_string) {
          const auto& types = JsonTypes(family);
          if (const auto t = types.find(absl::string_view(s.data(), s.size())); t != types.end()) {
            r->SetEnumValue(msg, f, t->second);
          } else if (ProtoStrtoInt(s, &n) && n >= INT32_MIN && n <= INT32_MAX &&
                     f->enum_type()->FindValueByNumber(static_cast<int>(n)) != nullptr) {
            r->SetEnumValue(msg, f, static_cast<int>(n));
          }
          break;
        }
        if (v.is_int64()) {
          n = v.get_int64().value_unsafe();
        } else if (v.is_double() && v.get_double().value_unsafe() == std::floor(v.get_double().value_unsafe()) &&
                   std::fabs(v.get_double().value_unsafe()) < 1e10) {
          n = static_cast<int64_t>(v.get_double().value_unsafe());
        } else {
          return bad(f, "an enum name or number", v);
        }
        if (n < INT32_MIN || n > INT32_MAX) return bad(f, "an enum name or number", v);
        r->SetEnumValue(msg, f, static_cast<int>(n));  // undeclared numbers are kept (open enums)
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: {  // google.protobuf.Timestamp
        // protobuf's own reader of the JSON form, so that exactly its
        // timestamps are taken (upper-case T and Z, no leap second, at most
        // 9 fraction digits, years 1 to 9999).
        auto* ts = static_cast<pb::Timestamp*>(r->MutableMessage(msg, f));
        if (!is_string || !pb::util::TimeUtil::FromString(std::string(s), ts)) {
          *err = {RejectReason::kBadTimestamp,
                  fmt::format("field {}: {} is not an RFC 3339 time", f->json_name(), Text(simdjson::minify(v)))};
          return false;
        }
        break;
      }
      default:
        break;  // the event messages have no other kinds
    }
  }
  return true;
}

bool Decoder::Rep::DecodeJson(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta,
                              pb::Message* msg, DecodeError* err) {
  if (json.max_depth() != static_cast<size_t>(kMaxJsonDepth)) {
    if (json.allocate(64 * 1024, kMaxJsonDepth) != simdjson::SUCCESS) {
      *err = {RejectReason::kOversized, "cannot allocate the JSON parser's buffers"};
      return false;
    }  // deeper documents: DEPTH_ERROR, rejected below
  }
  element root;
  if (auto e = json.parse(payload.data(), payload.size()).get(root); e != simdjson::SUCCESS) {
    if (e == simdjson::DEPTH_ERROR || JsonDepth(payload) > kMaxJsonDepth) {
      *err = {RejectReason::kBadJson, fmt::format("JSON nested more than {} levels deep", kMaxJsonDepth)};
      return false;
    }
    if (e == simdjson::NUMBER_ERROR || e == simdjson::NUMBER_OUT_OF_RANGE) {
      // RFC 8259 allows numbers simdjson cannot hold (integers past 64
      // bits): such a record, rare, is parsed by nlohmann::json instead of
      // being dead-lettered.
      fallback = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
      if (!fallback.is_discarded()) {
        if (!fallback.is_object()) {
          *err = {RejectReason::kBadJson, "the payload is not a JSON object"};
          return false;
        }
        return MapPayload(mapping, NlohmannDoc{&fallback}, meta, msg, text, err);
      }
    }
    *err = {RejectReason::kBadJson, fmt::format("not JSON: {}", simdjson::error_message(e))};
    return false;
  }
  if (!root.is_object()) {
    *err = {RejectReason::kBadJson, fmt::format("the payload is {}, want a JSON object", TypeName(root.type()))};
    return false;
  }
  const JsonPaths* paths = mapping.json_paths();  // set for every json source (SourceMapping::Compile)
  if (paths == nullptr) {
    *err = {RejectReason::kNotDecodable, fmt::format("a {} source's record read as JSON", mapping.spec().format)};
    return false;
  }
  paths->Resolve(root, &json_paths_scratch);
  return MapPayload(mapping, JsonDoc{.resolved = &json_paths_scratch}, meta, msg, text, err);
}

bool Decoder::Rep::DecodeAvro(const SourceMapping& mapping, const std::shared_ptr<const AvroLayout>& layout,
                              std::string_view payload, const RecordMeta& meta, pb::Message* msg, DecodeError* err) {
  auto& datum = avro[layout.get()];
  if (!datum) datum = std::make_unique<AvroDatum>(layout);
  std::string why;
  if (!datum->Read(payload, &why)) {
    *err = {RejectReason::kNotDecodable, std::move(why)};
    return false;
  }
  return MapPayload(mapping, AvroDoc{datum.get()}, meta, msg, text, err);
}

bool Decoder::Rep::DecodeProto(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta,
                               pb::Message* msg, DecodeError* err) {
  const auto& layout = mapping.proto_layout();
  auto& datum = proto[layout.get()];
  if (!datum) datum = std::make_unique<ProtoDatum>(layout);
  std::string why;
  if (!datum->Read(payload, &why)) {
    *err = {RejectReason::kNotDecodable, std::move(why)};
    return false;
  }
  return MapPayload(mapping, ProtoDoc{datum.get()}, meta, msg, text, err);
}

bool Decoder::DecodeMapped(const SourceMapping& mapping, std::string_view payload, const RecordMeta& meta,
                           kpi::EventView* out, DecodeError* err) {
  if (payload.empty()) {
    *err = {RejectReason::kEmpty, "the record has no payload (an empty value or a tombstone)"};
    return false;
  }
  if (payload.size() > rep_->options.max_payload_bytes) {
    *err = {RejectReason::kOversized,
            fmt::format("payload is {} bytes, the maximum is {}", payload.size(), rep_->options.max_payload_bytes)};
    return false;
  }
  const kpi::Family family = mapping.family();
  pb::Message* msg = rep_->MessageFor(family);
  msg->Clear();
  std::shared_ptr<const AvroLayout> layout = mapping.avro_layout();
  if (mapping.registry() != nullptr) {
    // The Confluent wire format: the writer schema by its id.
    auto frame = SplitConfluentFrame(payload);
    if (!frame.ok()) {
      *err = {RejectReason::kNotDecodable, std::string(frame.status().message())};
      return false;
    }
    auto found = mapping.LayoutFor(frame->first);
    if (!found.ok()) {
      if (absl::IsUnavailable(found.status())) {
        *err = {RejectReason::kNotDecodable, std::string(found.status().message()), /*retry=*/true};
      } else {
        *err = {RejectReason::kUnknownSchema,
                fmt::format("schema id {}: {}", frame->first, std::string(found.status().message()))};
      }
      return false;
    }
    layout = found->avro;
    payload = frame->second;
    if (mapping.proto_layout()) {
      // Confluent's protobuf framing adds the message's indexes in its file.
      auto indexes = SplitMessageIndexes(payload);
      if (!indexes.ok()) {
        *err = {RejectReason::kNotDecodable, std::string(indexes.status().message())};
        return false;
      }
      // Resolved in the registered file (the writer's), not the local one.
      const std::string& want = mapping.proto_layout()->descriptor()->full_name();
      const auto name = MessageNameAt(*found->proto_file, indexes->first);
      if (name != want) {
        *err = {RejectReason::kUnknownSchema,
                fmt::format("schema id {}: the record's message indexes [{}] select {}, the source reads {}",
                            frame->first, fmt::join(indexes->first, ", "), name.value_or("no message"), want)};
        return false;
      }
      payload = indexes->second;
    }
  }
  const bool ok = mapping.proto_layout() ? rep_->DecodeProto(mapping, payload, meta, msg, err)
                  : layout               ? rep_->DecodeAvro(mapping, layout, payload, meta, msg, err)
                                         : rep_->DecodeJson(mapping, payload, meta, msg, err);
  return ok && rep_->Finish(family, msg, out, err, /*values_checked=*/true);
}

void SilenceProtobufLogging() {
  pb::SetLogHandler([](pb::LogLevel, const char*, int, const std::string&) {});
}

}  // namespace kpistream::ingest
