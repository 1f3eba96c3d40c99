#include "ingest/router.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <charconv>

#include "state/aggregate.h"
#include "state/keys.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

Router::Router(const kpi::Catalog& catalog) {
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

// Appends the value of a dimension field, as text, to the group key.
void AppendDimension(const pb::Message& msg, const pb::Reflection* r, const pb::FieldDescriptor* f, std::string* key) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string tmp;
      state::AppendGroupValue(key, r->GetStringReference(msg, f, &tmp));
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = r->GetEnum(msg, f);
      state::AppendGroupValue(key, v ? v->name() : std::string());
      return;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      char buf[16];
      auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), r->GetInt32(msg, f));
      state::AppendGroupValue(key, std::string_view(buf, static_cast<size_t>(p - buf)));
      return;
    }
    default:
      state::AppendGroupValue(key, "");
  }
}

double NumericValue(const pb::Message& msg, const pb::Reflection* r, const pb::FieldDescriptor* f) {
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32) return r->GetInt32(msg, f);
  return r->GetDouble(msg, f);
}

}  // namespace

void Router::Route(const kpi::EventView& ev, std::string* scratch, std::vector<Contribution>* out) const {
  out->clear();
  scratch->clear();
  const auto& measures = by_family_[static_cast<int>(ev.family)];
  const auto* r = ev.msg->GetReflection();
  // Group keys are appended to one scratch buffer and referenced by offset,
  // so the buffer may grow without invalidating earlier contributions.
  std::vector<std::pair<size_t, size_t>> spans;
  spans.reserve(measures.size());
  for (const auto& c : measures) {
    if (ev.type < 0 || ev.type >= 64 || !c.types.test(static_cast<size_t>(ev.type))) continue;
    const auto* def = c.def;
    if (def->filter && !def->filter->Matches(*ev.msg)) continue;
    Contribution con;
    con.measure = c.index;
    if (def->aggregation == kpi::Aggregation::kDistinct) {
      std::string tmp;
      const auto& s = r->GetStringReference(*ev.msg, def->field_desc, &tmp);
      if (s.empty()) continue;  // no entity to count
      con.hash = state::HashForSketch(s);
    } else if (def->field_desc != nullptr) {
      con.value = NumericValue(*ev.msg, r, def->field_desc);
    }
    const size_t begin = scratch->size();
    for (const auto* f : def->group_by_desc) AppendDimension(*ev.msg, r, f, scratch);
    spans.emplace_back(begin, scratch->size() - begin);
    out->push_back(con);
  }
  for (size_t i = 0; i < out->size(); ++i) {
    (*out)[i].group = std::string_view(*scratch).substr(spans[i].first, spans[i].second);
  }
}

}  // namespace kpistream::ingest
