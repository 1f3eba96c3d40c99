#include "ingest/source_mapping.h"

#include "ingest/json_paths.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include <cmath>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "ingest/avro_layout.h"
#include "ingest/proto_layout.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

namespace {

// Fields the mapping fills by its own keys, not under `fields`.
bool IsReserved(const std::string& name) { return name == "event_id" || name == "event_time" || name == "type"; }

std::vector<std::string> TargetNames(kpi::Family family) {
  std::vector<std::string> out;
  const auto* d = kpi::FamilyDescriptor(family);
  for (int i = 0; i < d->field_count(); ++i) {
    if (!IsReserved(d->field(i)->name())) out.push_back(d->field(i)->name());
  }
  return out;
}

SourceMapping::Path MakePath(const std::string& text) {
  SourceMapping::Path p;
  p.text = text;
  if (!text.empty()) p.keys = absl::StrSplit(text, '.');
  return p;
}

}  // namespace

std::optional<std::string> CheckSourceFormat(const std::string& format) {
  for (const char* f : kSourceFormats) {
    if (format == f) return std::nullopt;
  }
  return fmt::format("unknown format '{}' (supported: json, avro, protobuf)", format);
}

std::optional<std::string> CheckTargetField(kpi::Family family, const std::string& target) {
  if (IsReserved(target)) {
    return fmt::format("'{}' is set by the source's own key {}, not under fields", target, target);
  }
  const auto* f = kpi::FamilyDescriptor(family)->FindFieldByName(target);
  if (f == nullptr) {
    return fmt::format("{} events have no field '{}' (fields: {})", kpi::FamilyName(family), target,
                       absl::StrJoin(TargetNames(family), ", "));
  }
  return std::nullopt;
}

absl::StatusOr<int> ResolveTypeName(kpi::Family family, const std::string& name) {
  const auto* d = kpi::FamilyDescriptor(family);
  const auto* e = d->FindFieldByName("type")->enum_type();
  const std::string upper = absl::AsciiStrToUpper(name);
  const std::string prefix(kpi::TypePrefix(family));
  for (const auto& candidate : {upper, prefix + upper}) {
    if (const auto* v = e->FindValueByName(candidate); v != nullptr && v->number() != 0) return v->number();
  }
  std::vector<std::string> known;
  for (int i = 1; i < e->value_count(); ++i) {
    known.push_back(absl::AsciiStrToLower(e->value(i)->name().substr(prefix.size())));
  }
  return absl::InvalidArgumentError(fmt::format("'{}' is not a {} event type (types: {})", name,
                                                kpi::FamilyName(family), absl::StrJoin(known, ", ")));
}

std::optional<std::string> CheckNumber(const std::string& text, double scale, bool int32) {
  double x = 0;
  if (!absl::SimpleAtod(text, &x) || !std::isfinite(x)) return fmt::format("'{}' is not a number", text);
  x *= scale;
  if (int32 && (x != std::floor(x) || x < INT32_MIN || x > INT32_MAX)) {
    return fmt::format("'{}' is not a whole number in the range of a 32-bit integer", text);
  }
  return std::nullopt;
}

std::optional<std::string> CheckTimeSpec(const TimeSpec& t) {
  if (t.record_timestamp && !t.field.empty()) return "a time comes from a field or the record timestamp, not both";
  if (!t.record_timestamp && t.field.empty()) return "a time needs a field (or record_timestamp: true)";
  if (t.unit != "s" && t.unit != "ms" && t.unit != "us" && t.unit != "ns") {
    return fmt::format("unit {} is not one of s, ms, us, ns", t.unit);
  }
  if (t.format.empty()) return "format must not be empty (rfc3339, or a format such as \"%Y-%m-%d %H:%M:%S\")";
  return std::nullopt;
}

absl::StatusOr<std::shared_ptr<const SourceMapping>> SourceMapping::Compile(const SourceSpec& spec) {
  auto m = std::shared_ptr<SourceMapping>(new SourceMapping());
  m->spec_ = spec;
  const SourceSpec& s = m->spec_;
  const std::string where = fmt::format("source {}", s.topic);
  if (auto e = CheckSourceFormat(s.format)) return absl::InvalidArgumentError(fmt::format("{}: {}", where, *e));
  if (auto e = CheckTimeSpec(s.event_time)) {
    return absl::InvalidArgumentError(fmt::format("{}: event_time: {}", where, *e));
  }
  m->event_id_ = MakePath(s.event_id_field);
  m->event_time_ = MakePath(s.event_time.field);
  if (s.type_field.empty() == s.type_constant.empty()) {
    return absl::InvalidArgumentError(fmt::format("{}: type needs a field or a constant (one of them)", where));
  }
  if (!s.type_constant.empty()) {
    auto t = ResolveTypeName(s.family, s.type_constant);
    if (!t.ok())
      return absl::InvalidArgumentError(fmt::format("{}: type: {}", where, std::string(t.status().message())));
    m->type_constant_ = *t;
  }
  m->type_ = MakePath(s.type_field);
  for (const auto& [value, name] : s.type_values) {
    auto t = ResolveTypeName(s.family, name);
    if (!t.ok()) {
      return absl::InvalidArgumentError(fmt::format("{}: type values: {}", where, std::string(t.status().message())));
    }
    m->type_values_.emplace(value, *t);
  }
  const auto* d = kpi::FamilyDescriptor(s.family);
  if (s.type_values.empty()) {
    // The payload names types itself: every spelling ResolveTypeName takes
    // but mixed case, looked up without building strings per record.
    const auto* e = d->FindFieldByName("type")->enum_type();
    const size_t prefix = kpi::TypePrefix(s.family).size();
    for (int i = 1; i < e->value_count(); ++i) {
      const std::string& full = e->value(i)->name();
      for (const auto& spelling : {full, full.substr(prefix)}) {
        m->type_values_.emplace(spelling, e->value(i)->number());
        m->type_values_.emplace(absl::AsciiStrToLower(spelling), e->value(i)->number());
      }
    }
  }
  for (const auto& [target, vs] : s.fields) {
    if (auto e = CheckTargetField(s.family, target)) {
      return absl::InvalidArgumentError(fmt::format("{}: fields: {}", where, *e));
    }
    Target t;
    t.field = d->FindFieldByName(target);
    t.spec = &vs;
    const bool time = t.field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE;
    // A time comes from its TimeSpec (a field or the record timestamp);
    // anything else from a field or a constant.
    if (!time && vs.field.empty() == !vs.constant.has_value()) {
      return absl::InvalidArgumentError(fmt::format("{}: fields.{}: give a field or a constant", where, target));
    }
    t.path = MakePath(time ? vs.time.field : vs.field);
    switch (t.field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        t.kind = Kind::kString;
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_INT32:
        t.kind = t.field->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE ? Kind::kDouble : Kind::kInt32;
        // A constant or default of a numeric field is checked now, not on
        // every record.
        for (const auto* given : {vs.constant ? &*vs.constant : nullptr, vs.fallback ? &*vs.fallback : nullptr}) {
          if (given == nullptr) continue;
          if (auto e = CheckNumber(*given, vs.scale, t.kind == Kind::kInt32)) {
            return absl::InvalidArgumentError(fmt::format("{}: fields.{}: {}", where, target, *e));
          }
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:  // google.protobuf.Timestamp
        t.kind = Kind::kTime;
        if (vs.constant) {
          return absl::InvalidArgumentError(fmt::format("{}: fields.{}: a time cannot be a constant", where, target));
        }
        if (auto e = CheckTimeSpec(vs.time)) {
          return absl::InvalidArgumentError(fmt::format("{}: fields.{}: {}", where, target, *e));
        }
        break;
      default:
        return absl::InvalidArgumentError(fmt::format("{}: fields.{}: this field cannot be mapped", where, target));
    }
    m->targets_.push_back(std::move(t));
  }
  auto use = [&](Path* p, Kind kind) {
    if (p->keys.empty()) return;
    p->slot = static_cast<int>(m->paths_.size());
    m->paths_.push_back({p, kind});
  };
  use(&m->event_id_, Kind::kString);
  use(&m->event_time_, Kind::kTime);
  use(&m->type_, Kind::kString);
  for (auto& t : m->targets_) use(&t.path, t.kind);
  if (s.format == "json") {
    std::vector<const std::vector<std::string>*> keys;
    for (const auto& u : m->paths_) keys.push_back(&u.path->keys);
    m->json_paths_ = std::make_shared<JsonPaths>(keys);
  }
  if (s.format == "protobuf") {
    if (s.descriptor_set.empty() || s.message.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: format protobuf needs descriptor_set_file (protoc --include_imports --descriptor_set_out) and message",
          where));
    }
    auto layout = ProtoLayout::Compile(*m, s.descriptor_set, s.message);
    if (!layout.ok()) {
      return absl::InvalidArgumentError(fmt::format("{}: {} {}: {}", where, s.descriptor_set_file, s.message,
                                                    std::string(layout.status().message())));
    }
    m->proto_layout_ = *layout;
  }
  if (!s.registry.url.empty()) {
    m->registry_ = std::make_shared<SchemaRegistryClient>(s.registry);
  } else if (s.format == "avro") {
    if (s.schema_text.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: format avro needs its writer schema: schema_file, or schema_registry", where));
    }
    auto layout = AvroLayout::Compile(*m, s.schema_text, /*strict=*/true);
    if (!layout.ok()) {
      return absl::InvalidArgumentError(fmt::format("{}: schema {}: {}", where,
                                                    s.schema_file.empty() ? "" : s.schema_file,
                                                    std::string(layout.status().message())));
    }
    m->avro_layout_ = *layout;
  }
  return std::shared_ptr<const SourceMapping>(std::move(m));
}

absl::StatusOr<SourceMapping::Registered> SourceMapping::LayoutFor(int32_t schema_id) const {
  {
    std::lock_guard lock(layouts_mu_);
    if (auto it = layouts_.find(schema_id); it != layouts_.end()) return it->second;
  }
  // Unlocked: the registry call may wait on the network (it caches and
  // backs off by itself).
  auto schema = registry_->Lookup(schema_id);
  if (!schema.ok()) return schema.status();  // not cached: asked again (after the client's backoff)
  absl::StatusOr<Registered> layout = Registered{};
  const std::string want = spec_.format == "avro" ? "AVRO" : spec_.format == "protobuf" ? "PROTOBUF" : "JSON";
  if ((*schema)->type != want) {
    layout = absl::InvalidArgumentError(
        fmt::format("the registry's schema is {}, the source's format is {}", (*schema)->type, spec_.format));
  } else if (spec_.format == "avro") {
    // Lenient: a field one writer schema lacks reads as absent; whether the
    // record may miss it is the mapping's `required`/`default`.
    auto avro = AvroLayout::Compile(*this, (*schema)->text, /*strict=*/false);
    if (avro.ok()) {
      layout = Registered{.avro = *avro};
    } else {
      layout = avro.status();
    }
  } else if (spec_.format == "protobuf") {
    // The records' message indexes point into this file, which may order
    // its messages unlike the local descriptor set.
    auto file = ParseProtoText((*schema)->text);
    if (file.ok()) {
      layout = Registered{.proto_file = *file};
    } else {
      layout = file.status();
    }
  }
  std::lock_guard lock(layouts_mu_);
  return layouts_.emplace(schema_id, std::move(layout)).first->second;
}

int SourceMapping::TypeOf(std::string_view value) const {
  const auto it = type_values_.find(value);
  return it == type_values_.end() ? 0 : it->second;
}

}  // namespace kpistream::ingest
