#include "gen/user_shapes.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include <avro.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"

namespace kpistream::gen {

namespace pb = google::protobuf;

namespace {

bool Reserved(const std::string& name) { return name == "event_id" || name == "event_time" || name == "type"; }
bool IsEntity(const std::string& name) { return name.size() > 3 && name.ends_with("_id"); }

// "CAMPAIGN_FEATURE_USED" -> "feature_used" (flat) or "Feature Used" (nested).
std::string ShortType(kpi::Family family, const std::string& full, UserShape shape) {
  std::string s = absl::AsciiStrToLower(full.substr(kpi::TypePrefix(family).size()));
  if (shape == UserShape::kFlat) return s;
  bool up = true;
  for (char& c : s) {
    if (c == '_') {
      c = ' ';
      up = true;
    } else if (up) {
      c = absl::ascii_toupper(c);
      up = false;
    }
  }
  return s;
}

int64_t Millis(const pb::Timestamp& t) { return t.seconds() * 1000 + t.nanos() / 1000000; }

// A family's Avro schema, parsed once per thread, and a value to fill.
struct AvroWriter {
  avro_schema_t schema = nullptr;
  avro_value_iface_t* iface = nullptr;
  avro_value_t value{};
  explicit AvroWriter(kpi::Family family) {
    const std::string text = AvroSchemaFor(family);
    if (avro_schema_from_json_length(text.data(), text.size(), &schema) != 0) std::abort();  // our own schema
    iface = avro_generic_class_from_schema(schema);
    avro_generic_value_new(iface, &value);
  }
  ~AvroWriter() {
    avro_value_decref(&value);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
  }
};

}  // namespace

std::string AvroSchemaFor(kpi::Family family) {
  const auto* d = kpi::FamilyDescriptor(family);
  const std::string name(kpi::FamilyName(family));
  const auto* e = d->FindFieldByName("type")->enum_type();
  nlohmann::ordered_json symbols = nlohmann::ordered_json::array(), keys = nlohmann::ordered_json::array(),
                         fields = nlohmann::ordered_json::array();
  for (int i = 1; i < e->value_count(); ++i) {
    symbols.push_back(absl::AsciiStrToUpper(ShortType(family, e->value(i)->name(), UserShape::kFlat)));
  }
  fields.push_back({{"name", "id"}, {"type", "string"}});
  fields.push_back({{"name", "ts"}, {"type", {{"type", "long"}, {"logicalType", "timestamp-millis"}}}});
  fields.push_back({{"name", "kind"}, {"type", {{"type", "enum"}, {"name", name + "_kind"}, {"symbols", symbols}}}});
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (Reserved(f->name())) continue;
    if (IsEntity(f->name())) {
      keys.push_back({{"name", f->name()}, {"type", "string"}, {"default", ""}});
      continue;
    }
    const char* type = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING   ? "string"
                       : f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE ? "double"
                       : f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32  ? "int"
                                                                              : "long";
    fields.push_back({{"name", f->name()}, {"type", {"null", type}}, {"default", nullptr}});
  }
  fields.push_back({{"name", "keys"}, {"type", {{"type", "record"}, {"name", name + "_keys"}, {"fields", keys}}}});
  return nlohmann::ordered_json{
      {"type", "record"}, {"name", name + "_event"}, {"namespace", "com.example.kpigen"}, {"fields", fields}}
      .dump();
}

std::string ToUserAvro(kpi::Family family, const pb::Message& event, int32_t schema_id) {
  thread_local std::unique_ptr<AvroWriter> writers[3];
  auto& w = writers[static_cast<int>(family)];
  if (!w) w = std::make_unique<AvroWriter>(family);
  const auto* d = event.GetDescriptor();
  const auto* r = event.GetReflection();
  avro_value_t* v = &w->value;
  avro_value_reset(v);
  avro_value_t f, branch, keys, k;
  const std::string id = r->GetString(event, d->FindFieldByName("event_id"));
  avro_value_get_by_name(v, "id", &f, nullptr);
  avro_value_set_string_len(&f, id.c_str(), id.size() + 1);
  avro_value_get_by_name(v, "ts", &f, nullptr);
  avro_value_set_long(
      &f, Millis(static_cast<const pb::Timestamp&>(r->GetMessage(event, d->FindFieldByName("event_time")))));
  avro_value_get_by_name(v, "kind", &f, nullptr);
  const auto* type_field = d->FindFieldByName("type");
  // Symbols are the enum's values in order, UNSPECIFIED (index 0) left out.
  avro_value_set_enum(&f, type_field->enum_type()->FindValueByNumber(r->GetEnumValue(event, type_field))->index() - 1);
  avro_value_get_by_name(v, "keys", &keys, nullptr);
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* fd = d->field(i);
    if (Reserved(fd->name())) continue;
    if (IsEntity(fd->name())) {
      const std::string s = r->GetString(event, fd);
      avro_value_get_by_name(&keys, fd->name().c_str(), &k, nullptr);
      avro_value_set_string_len(&k, s.c_str(), s.size() + 1);
      continue;
    }
    avro_value_get_by_name(v, fd->name().c_str(), &f, nullptr);
    bool present = true;
    switch (fd->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING: {
        const std::string s = r->GetString(event, fd);
        if ((present = !s.empty())) {
          avro_value_set_branch(&f, 1, &branch);
          avro_value_set_string_len(&branch, s.c_str(), s.size() + 1);
        }
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
        const double x = r->GetDouble(event, fd);
        if ((present = x != 0)) {
          avro_value_set_branch(&f, 1, &branch);
          avro_value_set_double(&branch, x);
        }
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        const int32_t x = r->GetInt32(event, fd);
        if ((present = x != 0)) {
          avro_value_set_branch(&f, 1, &branch);
          avro_value_set_int(&branch, x);
        }
        break;
      }
      default: {
        if ((present = r->HasField(event, fd))) {
          avro_value_set_branch(&f, 1, &branch);
          avro_value_set_long(&branch, Millis(static_cast<const pb::Timestamp&>(r->GetMessage(event, fd))));
        }
        break;
      }
    }
    if (!present) {
      avro_value_set_branch(&f, 0, &branch);
      avro_value_set_null(&branch);
    }
  }
  size_t size = 0;
  avro_value_sizeof(v, &size);
  std::string out(5 + size, '\0');
  const auto id32 = static_cast<uint32_t>(schema_id);
  out[1] = static_cast<char>(id32 >> 24);
  out[2] = static_cast<char>(id32 >> 16);
  out[3] = static_cast<char>(id32 >> 8);
  out[4] = static_cast<char>(id32);
  avro_writer_t writer = avro_writer_memory(out.data() + 5, static_cast<int64_t>(size));
  avro_value_write(writer, v);
  avro_writer_free(writer);
  return out;
}

std::string ToUserJson(kpi::Family family, const pb::Message& event, UserShape shape) {
  const auto* d = event.GetDescriptor();
  const auto* r = event.GetReflection();
  nlohmann::ordered_json j, context, properties;
  const auto& time = static_cast<const pb::Timestamp&>(r->GetMessage(event, d->FindFieldByName("event_time")));
  const std::string type = ShortType(family,
                                     d->FindFieldByName("type")
                                         ->enum_type()
                                         ->FindValueByNumber(r->GetEnumValue(event, d->FindFieldByName("type")))
                                         ->name(),
                                     shape);
  const std::string id = r->GetString(event, d->FindFieldByName("event_id"));
  if (shape == UserShape::kFlat) {
    j["id"] = id;
    j["ts"] = Millis(time);
    j["kind"] = type;
  } else {
    j["messageId"] = id;
    j["timestamp"] = pb::util::TimeUtil::ToString(time);
    j["event"] = type;
  }
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (Reserved(f->name())) continue;
    nlohmann::ordered_json v;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING: {
        const std::string s = r->GetString(event, f);
        if (s.empty()) continue;
        v = s;
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
        const double x = r->GetDouble(event, f);
        if (x == 0) continue;
        v = x;
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        const int32_t x = r->GetInt32(event, f);
        if (x == 0) continue;
        v = x;
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
        if (!r->HasField(event, f)) continue;
        const auto& t = static_cast<const pb::Timestamp&>(r->GetMessage(event, f));
        v = shape == UserShape::kFlat ? nlohmann::ordered_json(Millis(t))
                                      : nlohmann::ordered_json(pb::util::TimeUtil::ToString(t));
        break;
      }
      default:
        continue;
    }
    if (shape == UserShape::kFlat) {
      j[f->name()] = v;
    } else {
      (IsEntity(f->name()) ? context : properties)[f->name()] = v;
    }
  }
  if (shape == UserShape::kNested) {
    j["context"] = context;
    j["properties"] = properties;
  }
  return j.dump();
}

ingest::SourceSpec SourceSpecFor(kpi::Family family, UserShape shape, const std::string& topic,
                                 const std::string& registry_url) {
  const auto* d = kpi::FamilyDescriptor(family);
  const bool flat = shape != UserShape::kNested;
  ingest::SourceSpec s;
  s.topic = topic;
  s.family = family;
  if (shape == UserShape::kAvro) {
    s.format = "avro";
    s.registry.url = registry_url;
  }
  s.event_id_field = flat ? "id" : "messageId";
  s.event_time = flat ? ingest::TimeSpec{.field = "ts", .unit = "ms"} : ingest::TimeSpec{.field = "timestamp"};
  s.type_field = flat ? "kind" : "event";
  if (!flat) {
    const auto* e = d->FindFieldByName("type")->enum_type();
    for (int i = 1; i < e->value_count(); ++i) {
      s.type_values[ShortType(family, e->value(i)->name(), shape)] = e->value(i)->name();
    }
  }
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (Reserved(f->name())) continue;
    auto& v = s.fields[f->name()];
    v.field = shape == UserShape::kFlat   ? f->name()
              : shape == UserShape::kAvro ? (IsEntity(f->name()) ? "keys." : "") + f->name()
                                          : (IsEntity(f->name()) ? "context." : "properties.") + f->name();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      v.time = flat ? ingest::TimeSpec{.field = v.field, .unit = "ms"} : ingest::TimeSpec{.field = v.field};
    }
  }
  return s;
}

std::string SourceYaml(const ingest::SourceSpec& s) {
  auto time = [](const ingest::TimeSpec& t) {
    if (t.record_timestamp) return std::string("{record_timestamp: true}");
    // Defaults left out: numbers in ms, strings in RFC 3339.
    std::string y = fmt::format("{{field: {}", t.field);
    if (t.unit != "ms") y += fmt::format(", unit: {}", t.unit);
    if (t.format != "rfc3339") y += fmt::format(", format: \"{}\"", t.format);
    return y + "}";
  };
  // A pattern single-quoted: YAML keeps its backslashes as they are.
  const std::string topic = s.topic.starts_with('^') ? "'" + s.topic + "'" : s.topic;
  std::string y =
      fmt::format("    - topic: {}\n      family: {}\n      format: {}\n", topic, kpi::FamilyName(s.family), s.format);
  if (!s.schema_file.empty()) y += fmt::format("      schema_file: {}\n", s.schema_file);
  if (!s.registry.url.empty()) y += fmt::format("      schema_registry: {}\n", s.registry.url);
  if (!s.event_id_field.empty()) y += fmt::format("      event_id: {}\n", s.event_id_field);
  y += fmt::format("      event_time: {}\n", time(s.event_time));
  if (!s.type_constant.empty()) {
    y += fmt::format("      type: {{constant: {}}}\n", s.type_constant);
  } else {
    y += fmt::format("      type:\n        field: {}\n", s.type_field);
    if (!s.type_values.empty()) y += "        values:\n";
    for (const auto& [value, name] : s.type_values) y += fmt::format("          \"{}\": {}\n", value, name);
  }
  if (!s.fields.empty()) y += "      fields:\n";
  const auto* d = kpi::FamilyDescriptor(s.family);
  for (const auto& [target, v] : s.fields) {
    if (d->FindFieldByName(target)->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      y += fmt::format("        {}: {}\n", target, time(v.time));
    } else if (v.constant) {
      y += fmt::format("        {}: {{constant: \"{}\"}}\n", target, *v.constant);
    } else {
      std::string extra;
      if (v.scale != 1) extra += fmt::format(", scale: {}", v.scale);
      if (v.fallback) extra += fmt::format(", default: \"{}\"", *v.fallback);
      y += extra.empty() ? fmt::format("        {}: {}\n", target, v.field)
                         : fmt::format("        {}: {{field: {}{}}}\n", target, v.field, extra);
    }
  }
  return y;
}

}  // namespace kpistream::gen
