#include "ingest/router.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <charconv>

#include "state/aggregate.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

std::string CutDimensionValue(std::string_view value, size_t max_bytes) {
  constexpr size_t kSuffix = 17;  // '~' + 16 hex digits
  size_t keep = max_bytes > kSuffix ? std::min(value.size(), max_bytes - kSuffix) : 0;
  // Back off over UTF-8 continuation bytes (10xxxxxx) so no character is split.
  while (keep > 0 && keep < value.size() && (static_cast<unsigned char>(value[keep]) & 0xC0) == 0x80) --keep;
  std::string out(value.substr(0, keep));
  fmt::format_to(std::back_inserter(out), "~{:016x}", state::HashForSketch(value));
  return out;
}

Router::Router(const kpi::Catalog& catalog) : catalog_(catalog) {
  for (size_t i = 0; i < catalog.measures.size(); ++i) {
    const auto& m = catalog.measures[i];
    Compiled c{static_cast<int>(i), {}, &m};
    if (m.types.empty()) {
      c.types.set();
    } else {
      for (int t : m.types) c.types.set(static_cast<size_t>(t));
    }
    by_family_[static_cast<int>(m.family)].push_back(c);
  }
}

namespace {

// The value of a dimension field as text, appended to *scratch.
void AppendDimension(const pb::Message& msg, const pb::Reflection* r, const pb::FieldDescriptor* f,
                     std::string* scratch) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string tmp;
      scratch->append(r->GetStringReference(msg, f, &tmp));
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = r->GetEnum(msg, f);
      if (v) scratch->append(v->name());
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      char buf[16];
      auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), r->GetInt32(msg, f));
      scratch->append(buf, static_cast<size_t>(p - buf));
      return;
    }
    default:
      return;
  }
}

double NumericValue(const pb::Message& msg, const pb::Reflection* r, const pb::FieldDescriptor* f) {
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32) return r->GetInt32(msg, f);
  return r->GetDouble(msg, f);
}

// Attribution times are held to the decoder's event-time range.
constexpr int64_t kMinTimeS = 946684800;   // 2000-01-01
constexpr int64_t kMaxTimeS = 4102444800;  // 2100-01-01

}  // namespace

void Router::Route(const kpi::EventView& ev, RoutedEvent* out) const {
  out->contributions.clear();
  out->scratch.clear();
  out->dims_used.clear();
  out->cut.clear();
  if (out->dim_values.size() != catalog_.dimensions.size()) out->dim_values.assign(catalog_.dimensions.size(), {});
  const auto& measures = by_family_[static_cast<int>(ev.family)];
  const auto* r = ev.msg->GetReflection();
  // Values are appended to one scratch buffer and referenced by offset, so
  // the buffer may grow without invalidating earlier ones.
  auto& spans = out->spans;
  spans.assign(catalog_.dimensions.size(), {0, std::string::npos});
  for (const auto& c : measures) {
    if (ev.type < 0 || ev.type >= 64 || !c.types.test(static_cast<size_t>(ev.type))) continue;
    const auto* def = c.def;
    if (def->filter && !def->filter->Matches(*ev.msg)) continue;
    Contribution con;
    con.measure = c.index;
    con.time_ms = ev.time_ms;
    if (def->aggregation == kpi::Aggregation::kDistinct) {
      std::string tmp;
      const auto& s = r->GetStringReference(*ev.msg, def->field_desc, &tmp);
      if (s.empty()) continue;  // no entity to count
      con.hash = state::HashForSketch(s);
    } else if (def->field_desc != nullptr) {
      con.value = NumericValue(*ev.msg, r, def->field_desc);
    }
    if (def->time_desc != nullptr) {
      const auto& ts = static_cast<const pb::Timestamp&>(r->GetMessage(*ev.msg, def->time_desc));
      // An attribution time must precede the event it attributes (a trial
      // starts before it converts): one after event_time, like a missing or
      // invalid one, would file the event into a bucket of its future.
      // Range first: seconds near INT64_MAX would overflow the product.
      const bool in_range = r->HasField(*ev.msg, def->time_desc) && ts.seconds() >= kMinTimeS &&
                            ts.seconds() < kMaxTimeS && ts.nanos() >= 0 && ts.nanos() <= 999999999;
      const int64_t at_ms = in_range ? ts.seconds() * 1000 + ts.nanos() / 1000000 : 0;
      if (in_range && at_ms <= ev.time_ms) {
        con.time_ms = at_ms;
      } else {
        con.time_fallback = true;
      }
    }
    for (size_t i = 0; i < def->group_dims.size(); ++i) {
      const auto d = static_cast<size_t>(def->group_dims[i]);
      if (spans[d].second != std::string::npos) continue;
      const size_t begin = out->scratch.size();
      AppendDimension(*ev.msg, r, def->group_by_desc[i], &out->scratch);
      if (out->scratch.size() - begin > catalog_.max_dimension_bytes) {
        const std::string cut =
            CutDimensionValue(std::string_view(out->scratch).substr(begin), catalog_.max_dimension_bytes);
        out->scratch.resize(begin);
        out->scratch.append(cut);
        out->cut.push_back(static_cast<int>(d));
      }
      spans[d] = {begin, out->scratch.size() - begin};
      out->dims_used.push_back(static_cast<int>(d));
    }
    out->contributions.push_back(con);
  }
  for (int d : out->dims_used) {
    const auto& s = spans[static_cast<size_t>(d)];
    out->dim_values[static_cast<size_t>(d)] = std::string_view(out->scratch).substr(s.first, s.second);
  }
}

}  // namespace kpistream::ingest
