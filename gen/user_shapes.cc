#include "gen/user_shapes.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

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

}  // namespace

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

ingest::SourceSpec SourceSpecFor(kpi::Family family, UserShape shape, const std::string& topic) {
  const auto* d = kpi::FamilyDescriptor(family);
  const bool flat = shape == UserShape::kFlat;
  ingest::SourceSpec s;
  s.topic = topic;
  s.family = family;
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
    v.field = flat ? f->name() : (IsEntity(f->name()) ? "context." : "properties.") + f->name();
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
  std::string y = fmt::format("    - topic: {}\n      family: {}\n      format: {}\n", s.topic,
                              kpi::FamilyName(s.family), s.format);
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
