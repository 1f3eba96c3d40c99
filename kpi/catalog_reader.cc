// The KPI file's reader: measures, KPIs, targets and the top-level keys;
// alert rules are read by alert_rule_reader.cc. Every error is collected
// with its place (kpi/yaml_reader.h).
#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <functional>
#include <iterator>
#include <map>

#include "kpi/alert_rule_reader.h"
#include "kpi/catalog.h"
#include "kpi/yaml_reader.h"

namespace kpistream::kpi {

namespace pb = google::protobuf;

namespace {

class CatalogParser {
 public:
  explicit CatalogParser(std::string_view filename) : y_(std::string(filename)) {}

  absl::StatusOr<Catalog> Parse(std::string_view text) {
    auto root = y_.Load(text);
    if (!root.ok()) return root.status();
    auto st = y_.Run([&] { ParseRoot(*root); });
    if (!st.ok()) return st;
    return std::move(cat_);
  }

 private:
  void ParseRoot(const YAML::Node& root) {
    if (!root.IsMap()) {
      y_.AddError(root, "the catalog must be a map with 'measures' and 'kpis'");
      return;
    }
    y_.CheckKeys(root, {"measures", "kpis", "alerts", "timezone", "constants", "max_dimension_bytes", "funnels"});
    if (const auto tz = y_.Scalar(root, "timezone", false)) {
      auto alignment = ZoneAlignment(*tz);
      if (!alignment.ok()) {
        y_.AddError(root["timezone"],
                    fmt::format("unknown time zone '{}' (use an IANA name such as UTC or Europe/Berlin)", *tz));
      } else {
        cat_.timezone = *tz;
        cat_.zone_alignment_seconds = *alignment;
      }
    }
    if (const auto n = y_.Int(root, "max_dimension_bytes", kMinDimensionBytes, 1 << 20)) cat_.max_dimension_bytes = *n;
    if (const auto consts = root["constants"]) {
      if (!consts.IsMap()) {
        y_.AddError(consts, "'constants' must be a map of name to number, e.g. {monthly_budget: 150000}");
      } else {
        for (auto it = consts.begin(); it != consts.end(); ++it) {
          const auto name = it->first.as<std::string>();
          const auto text = it->second.IsScalar() ? it->second.as<std::string>() : std::string();
          double v = 0;
          auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
          if (!YamlReader::ValidName(name) || ec != std::errc() || ptr != text.data() + text.size() ||
              !std::isfinite(v)) {
            y_.AddError(it->first, fmt::format("constant '{}' must be a name and a number", name));
            continue;
          }
          cat_.constants[name] = v;
        }
      }
    }
    const auto measures = root["measures"];
    if (!measures || !measures.IsMap() || measures.size() == 0) {
      y_.AddError(root, "'measures' must be a non-empty map of measure name to definition");
      return;
    }
    for (auto it = measures.begin(); it != measures.end(); ++it) ParseMeasure(it->first, it->second);
    BuildDimensions();
    const auto kpis = root["kpis"];
    if (kpis && !kpis.IsMap()) y_.AddError(kpis, "'kpis' must be a map of KPI name to definition");
    if (kpis && kpis.IsMap()) {
      for (auto it = kpis.begin(); it != kpis.end(); ++it) kpi_names_.push_back(it->first.as<std::string>());
      for (auto it = kpis.begin(); it != kpis.end(); ++it) ParseKpi(it->first, it->second);
      InlineKpiRefs();
      CheckExports();
    }
    if (const auto f = root["funnels"]) ParseFunnels(f);
    if (const auto alerts = root["alerts"]) {
      if (!alerts.IsMap()) {
        y_.AddError(alerts, "'alerts' must be a map of alert name to rule");
      } else {
        for (auto it = alerts.begin(); it != alerts.end(); ++it) ReadAlertRule(&y_, it->first, it->second, &cat_);
      }
    }
  }

  // Every (family, dimension) some measure groups by, and each measure's
  // dimensions as indices into them. A dimension keeps at most the smallest
  // max_groups of the measures grouping by it.
  void BuildDimensions() {
    for (auto& m : cat_.measures) {
      m.group_dims.clear();
      for (const auto& g : m.group_by) {
        auto it = std::find_if(cat_.dimensions.begin(), cat_.dimensions.end(),
                               [&](const DimensionDef& d) { return d.family == m.family && d.name == g; });
        if (it == cat_.dimensions.end()) {
          cat_.dimensions.push_back({.family = m.family, .name = g, .max_values = m.max_groups});
          it = std::prev(cat_.dimensions.end());
        }
        it->max_values = std::min(it->max_values, m.max_groups);
        m.group_dims.push_back(static_cast<int>(it - cat_.dimensions.begin()));
      }
    }
  }

  enum class FieldUse { kNumeric, kString, kDimension };
  static bool Fits(const pb::FieldDescriptor* f, FieldUse use) {
    const auto t = f->cpp_type();
    switch (use) {
      case FieldUse::kNumeric:
        return t == pb::FieldDescriptor::CPPTYPE_DOUBLE || t == pb::FieldDescriptor::CPPTYPE_INT32;
      case FieldUse::kString:
        return t == pb::FieldDescriptor::CPPTYPE_STRING;
      case FieldUse::kDimension:
        return t == pb::FieldDescriptor::CPPTYPE_STRING || t == pb::FieldDescriptor::CPPTYPE_ENUM ||
               t == pb::FieldDescriptor::CPPTYPE_INT32;
    }
    return false;
  }
  // The fields of an event usable as `use`, for error messages.
  static std::string FieldList(const pb::Descriptor* d, FieldUse use) {
    std::string out;
    for (int i = 0; i < d->field_count(); ++i) {
      const auto* f = d->field(i);
      if (Fits(f, use) && f->name() != "event_id") out += (out.empty() ? "" : ", ") + f->name();
    }
    return out;
  }

  // Event types ("impression", ...) as the family's enum numbers.
  void ReadTypes(const YAML::Node& def, const pb::Descriptor* desc, const std::string& family, MeasureDef* out) {
    MeasureDef& m = *out;
    const auto* type_enum = desc->FindFieldByName("type")->enum_type();
    for (const auto& [t, node] : y_.List(def, "types")) {
      std::string upper = std::string(TypePrefix(m.family));
      for (char c : t) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
      const auto* v = type_enum->FindValueByName(upper);
      if (!v || v->number() == 0) {
        std::string known;
        for (int i = 1; i < type_enum->value_count(); ++i) {
          std::string n = type_enum->value(i)->name().substr(TypePrefix(m.family).size());
          for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          known += (known.empty() ? "" : ", ") + n;
        }
        y_.AddError(node, fmt::format("unknown {} event type '{}' (known: {})", family, t, known));
        continue;
      }
      m.types.push_back(v->number());
      m.type_names.push_back(t);
    }
  }

  // false (with an error) for an unknown aggregation.
  bool ReadAggregation(const YAML::Node& def, const std::string& agg, MeasureDef* out) {
    MeasureDef& m = *out;
    static constexpr std::pair<std::string_view, Aggregation> kAggs[] = {
        {"count", Aggregation::kCount},       {"sum", Aggregation::kSum},  {"min", Aggregation::kMin},
        {"max", Aggregation::kMax},           {"avg", Aggregation::kAvg},  {"distinct", Aggregation::kDistinct},
        {"quantile", Aggregation::kQuantile}, {"last", Aggregation::kLast}};
    bool found = false;
    for (const auto& [n, a] : kAggs) {
      if (n == agg) {
        m.aggregation = a;
        found = true;
      }
    }
    if (!found) {
      y_.AddError(
          def["aggregation"],
          fmt::format("unknown aggregation '{}' (known: count, sum, min, max, avg, distinct, quantile, last)", agg));
      return false;
    }
    return true;
  }

  // The value field: numeric (int32, double) for sum, min, max, avg,
  // quantile and last; a string for distinct.
  void ReadField(const YAML::Node& def, const pb::Descriptor* desc, const std::string& family, const std::string& agg,
                 MeasureDef* out) {
    MeasureDef& m = *out;
    const auto field = y_.Scalar(def, "field", m.aggregation != Aggregation::kCount);
    if (!field) return;
    m.field = *field;
    m.field_desc = desc->FindFieldByName(m.field);
    const auto use = m.aggregation == Aggregation::kDistinct ? FieldUse::kString : FieldUse::kNumeric;
    const char* kind = use == FieldUse::kString ? "string" : "numeric";
    if (!m.field_desc) {
      y_.AddError(def["field"], fmt::format("unknown field '{}' of {} events (its {} fields: {})", m.field, family,
                                            kind, FieldList(desc, use)));
    } else if (!Fits(m.field_desc, use)) {
      y_.AddError(def["field"],
                  fmt::format("field '{}' is not {}; {} needs one of: {}", m.field,
                              use == FieldUse::kString ? "a string" : "numeric", agg, FieldList(desc, use)));
    }
  }

  void ReadGroupBy(const YAML::Node& def, const pb::Descriptor* desc, const std::string& family, MeasureDef* out) {
    MeasureDef& m = *out;
    for (const auto& [g, node] : y_.List(def, "group_by")) {
      const auto* f = desc->FindFieldByName(g);
      if (!f || !Fits(f, FieldUse::kDimension)) {
        y_.AddError(node, fmt::format("cannot group {} events by '{}' (dimensions: {})", family, g,
                                      FieldList(desc, FieldUse::kDimension)));
        continue;
      }
      if (std::find(m.group_by.begin(), m.group_by.end(), g) != m.group_by.end()) {
        y_.AddError(node, fmt::format("dimension '{}' is listed twice", g));
        continue;
      }
      m.group_by.push_back(g);
      m.group_by_desc.push_back(f);
    }
    if (m.group_by.size() > 8) y_.AddError(def["group_by"], "at most 8 group_by dimensions per measure");
  }

  void ReadBucket(const YAML::Node& def, MeasureDef* out) {
    MeasureDef& m = *out;
    if (const auto bucket = y_.Scalar(def, "bucket", false)) {
      auto secs = ParseDuration(*bucket);
      if (!secs.ok()) {
        y_.AddError(def["bucket"], std::string(secs.status().message()));
      } else if (!(*secs == 86400 || (*secs <= 3600 && 3600 % *secs == 0))) {
        y_.AddError(def["bucket"],
                    fmt::format("bucket '{}' must divide one hour (e.g. 10s, 1m, 5m, 1h) or be 1d", *bucket));
      } else {
        m.declared_bucket_seconds = *secs;
      }
    }
    // Stored finer where the catalog's zone needs it, so that calendar
    // windows there start and end on bucket boundaries.
    m.bucket_seconds = StorageBucket(m.declared_bucket_seconds, cat_.zone_alignment_seconds);
  }

  // Attribution: the timestamp field the measure files an event under.
  void ReadTime(const YAML::Node& def, const pb::Descriptor* desc, const std::string& family, MeasureDef* out) {
    MeasureDef& m = *out;
    if (const auto t = y_.Scalar(def, "time", false)) {
      const auto* f = desc->FindFieldByName(*t);
      if (*t == "event_time") {
        m.time_field.clear();
      } else if (!f || f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE ||
                 f->message_type()->full_name() != "google.protobuf.Timestamp") {
        std::string times;
        for (int i = 0; i < desc->field_count(); ++i) {
          const auto* x = desc->field(i);
          if (x->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE &&
              x->message_type()->full_name() == "google.protobuf.Timestamp") {
            times += (times.empty() ? "" : ", ") + x->name();
          }
        }
        y_.AddError(def["time"],
                    fmt::format("time '{}' must be a timestamp field of {} events (known: {})", *t, family, times));
      } else {
        m.time_field = *t;
        m.time_desc = f;
      }
    }
  }

  void ParseMeasure(const YAML::Node& key_node, const YAML::Node& def) {
    MeasureDef m;
    m.name = key_node.as<std::string>();
    if (!YamlReader::ValidName(m.name)) {
      y_.AddError(key_node, fmt::format("measure name '{}' must be letters, digits and _", m.name));
      return;
    }
    if (cat_.FindMeasure(m.name)) {
      y_.AddError(key_node, fmt::format("measure '{}' is defined twice", m.name));
      return;
    }
    if (!def.IsMap()) {
      y_.AddError(def, fmt::format("measure '{}' must be a map (family, types, aggregation, ...)", m.name));
      return;
    }
    y_.CheckKeys(def, {"family", "types", "aggregation", "field", "group_by", "bucket", "help", "filter", "lateness",
                       "max_groups", "time"});
    const size_t errors_before = y_.ErrorCount();
    const auto family = y_.Scalar(def, "family", true);
    if (!family) return;
    const auto fam = ParseFamily(*family);
    if (!fam) {
      y_.AddError(def["family"], fmt::format("unknown family '{}' (known: campaign, product, crm)", *family));
      return;
    }
    m.family = *fam;
    const auto* desc = FamilyDescriptor(m.family);
    ReadTypes(def, desc, *family, &m);
    const auto agg = y_.Scalar(def, "aggregation", true);
    if (!agg) return;
    if (!ReadAggregation(def, *agg, &m)) return;
    ReadField(def, desc, *family, *agg, &m);
    ReadGroupBy(def, desc, *family, &m);
    ReadBucket(def, &m);
    ReadTime(def, desc, *family, &m);
    if (const auto f = y_.Scalar(def, "filter", false)) {
      auto compiled = Filter::Compile(*f, m.family);
      if (!compiled.ok()) {
        y_.AddError(def["filter"], std::string(compiled.status().message()));
      } else {
        m.filter = std::make_shared<const Filter>(std::move(*compiled));
      }
    }
    if (const auto l = y_.Duration(def, "lateness", false)) m.lateness_ms = *l * 1000;
    if (const auto g = y_.Int(def, "max_groups", 1, 1000000)) m.max_groups = static_cast<uint32_t>(*g);
    if (y_.ErrorCount() == errors_before) cat_.measures.push_back(std::move(m));
  }

  void ParseKpi(const YAML::Node& key_node, const YAML::Node& def) {
    KpiDef k;
    k.name = key_node.as<std::string>();
    if (!YamlReader::ValidName(k.name)) {
      y_.AddError(key_node, fmt::format("KPI name '{}' must be letters, digits and _", k.name));
      return;
    }
    if (cat_.FindKpi(k.name)) {
      y_.AddError(key_node, fmt::format("KPI '{}' is defined twice", k.name));
      return;
    }
    if (!def.IsMap()) {
      y_.AddError(def, fmt::format("KPI '{}' must be a map (help, unit, formula, windows)", k.name));
      return;
    }
    y_.CheckKeys(def, {"help", "unit", "formula", "windows", "target", "export", "dashboards"});
    k.help = y_.Scalar(def, "help", false).value_or("");
    k.unit = y_.Scalar(def, "unit", false).value_or("ratio");
    static constexpr std::string_view kUnits[] = {"ratio", "percent", "currency", "seconds", "count", "score"};
    if (std::find(std::begin(kUnits), std::end(kUnits), k.unit) == std::end(kUnits)) {
      y_.AddError(def["unit"],
                  fmt::format("unknown unit '{}' (known: ratio, percent, currency, seconds, count, score)", k.unit));
    }
    const auto formula = y_.Scalar(def, "formula", true);
    if (!formula) return;
    k.formula = *formula;
    auto expr = ParseExpr(k.formula, [&](std::string_view name) -> std::optional<int> {
      for (size_t i = 0; i < cat_.measures.size(); ++i) {
        if (cat_.measures[i].name == name) return static_cast<int>(i);
      }
      for (size_t i = 0; i < kpi_names_.size(); ++i) {
        if (kpi_names_[i] == name) return kKpiRefBase + static_cast<int>(i);
      }
      int ci = 0;
      for (const auto& [cname, v] : cat_.constants) {
        if (cname == name) return kConstBase + ci;
        ++ci;
      }
      return std::nullopt;
    });
    if (!expr.ok()) {
      y_.AddError(def["formula"], std::string(expr.status().message()));
      return;
    }
    if (auto st = CheckQuantileUse(*expr, false); !st.empty()) {
      y_.AddError(def["formula"], fmt::format("formula \"{}\": {}", k.formula, st));
      return;
    }
    k.expr = std::move(*expr);
    formula_nodes_[k.name] = def["formula"];
    for (const auto& [w, node] : y_.List(def, "windows")) {
      if (auto st = ValidateWindow(w); !st.ok()) {
        y_.AddError(node, std::string(st.message()));
        continue;
      }
      k.windows.push_back(w);
    }
    if (k.windows.empty()) k.windows = {"1h", "24h"};
    if (const auto t = def["target"]) ParseTarget(t, &k);
    if (const auto e = def["export"]) ParseExports(e, &k);
    for (const auto& [d, node] : y_.List(def, "dashboards")) {
      if (!YamlReader::ValidName(d)) {
        y_.AddError(node, fmt::format("dashboard name '{}' must be letters, digits and _", d));
        continue;
      }
      k.dashboards.push_back(d);
    }
    cat_.kpis.push_back(std::move(k));
  }

  static constexpr int kKpiRefBase = 1 << 20;
  static constexpr int kConstBase = 1 << 24;

  // Replaces constants by numbers, checks windows and dimensions, and turns
  // measure refs into inputs.
  void BuildInputs(KpiDef* k) {
    std::function<void(Expr*, const Expr*)> walk = [&](Expr* e, const Expr* parent) {
      if (e->op == Expr::Op::kRef && e->ref >= kConstBase) {
        auto it = cat_.constants.begin();
        std::advance(it, e->ref - kConstBase);
        Expr n;
        n.num = it->second;
        *e = n;
        return;
      }
      if (e->op == Expr::Op::kRef) {
        KpiInput in;
        in.measure = e->ref;
        in.window = e->window;
        if (!in.window.empty()) {
          if (auto st = ValidateWindow(in.window); !st.ok()) {
            y_.AddError(formula_nodes_[k->name],
                        fmt::format("formula \"{}\": {}", k->formula, std::string(st.message())));
          }
        }
        if (parent && parent->op == Expr::Op::kGroupsAtLeast) {
          const auto& m = cat_.measures[static_cast<size_t>(in.measure)];
          if (std::find(m.group_by.begin(), m.group_by.end(), parent->name) == m.group_by.end()) {
            y_.AddError(formula_nodes_[k->name],
                        fmt::format("formula \"{}\": groups_at_least needs '{}' in the group_by of measure '{}'",
                                    k->formula, parent->name, m.name));
          }
          in.group_dim = parent->name;
          in.threshold = parent->num;
        }
        auto pos = std::find(k->inputs.begin(), k->inputs.end(), in);
        if (pos == k->inputs.end()) pos = k->inputs.insert(pos, in);
        e->ref = static_cast<int>(pos - k->inputs.begin());
        if (std::find(k->measures.begin(), k->measures.end(), in.measure) == k->measures.end()) {
          k->measures.push_back(in.measure);
        }
        return;
      }
      for (auto& a : e->args) walk(&a, e);
    };
    walk(&k->expr, nullptr);
  }

  // A quantile measure must be read through p50()..quantile(); other
  // measures must not.
  std::string CheckQuantileUse(const Expr& e, bool inside_quantile) const {
    if (e.op == Expr::Op::kRef && e.ref < kKpiRefBase) {
      const bool is_q = cat_.measures[e.ref].aggregation == Aggregation::kQuantile;
      if (is_q && !inside_quantile) {
        return fmt::format("measure '{}' is a quantile sketch: use p50({}), p95({}), p99({}) or quantile({}, q)",
                           e.name, e.name, e.name, e.name, e.name);
      }
      if (!is_q && inside_quantile) return fmt::format("measure '{}' is not a quantile measure", e.name);
      return "";
    }
    if (e.op == Expr::Op::kRef && inside_quantile) return fmt::format("'{}' is a KPI, not a quantile measure", e.name);
    for (const auto& a : e.args) {
      auto err = CheckQuantileUse(a, e.op == Expr::Op::kQuantile);
      if (!err.empty()) return err;
    }
    return "";
  }

  // export: [{group_by: [channel]}, {group_by: [sales_rep], top: 20, order: desc}]
  void ParseExports(const YAML::Node& e, KpiDef* k) {
    if (!e.IsSequence()) {
      y_.AddError(e,
                  "export must be a list of breakdowns, e.g. [{group_by: [channel]}, {group_by: [sales_rep], "
                  "top: 20}]");
      return;
    }
    for (const auto& x : e) {
      if (!x.IsMap()) {
        y_.AddError(x, "each export is a map: {group_by: [dimension, ...], top: N, order: desc|asc}");
        continue;
      }
      y_.CheckKeys(x, {"group_by", "top", "order"});
      ExportSpec spec;
      for (const auto& [d, node] : y_.List(x, "group_by")) spec.group_by.push_back(d);
      if (spec.group_by.empty()) y_.AddError(x, "an export needs group_by: the dimensions to break the KPI down by");
      if (const auto top = y_.Int(x, "top", 1, static_cast<int64_t>(kMaxExportGroups))) spec.top = *top;
      const auto order = y_.Scalar(x, "order", false).value_or("desc");
      if (order != "desc" && order != "asc") {
        y_.AddError(x["order"], fmt::format("order '{}' must be desc (the highest values) or asc (the lowest)", order));
      }
      spec.ascending = order == "asc";
      export_nodes_[k->name].push_back(x);
      k->exports.push_back(std::move(spec));
    }
  }

  // funnels: {dashboard: [kpi, ...]}, count KPIs from the top down.
  void ParseFunnels(const YAML::Node& f) {
    if (!f.IsMap()) {
      y_.AddError(f, "funnels must be a map of dashboard name to a list of KPIs, e.g. {sales: [leads, mqls, sqls]}");
      return;
    }
    for (auto it = f.begin(); it != f.end(); ++it) {
      const auto name = it->first.as<std::string>();
      std::vector<int> steps;
      for (const auto& [k, node] : y_.List(f, name.c_str())) {
        const KpiDef* kpi = cat_.FindKpi(k);
        if (!kpi) {
          y_.AddError(node, fmt::format("funnel '{}': unknown KPI '{}'", name, k));
          continue;
        }
        steps.push_back(static_cast<int>(kpi - cat_.kpis.data()));
      }
      if (steps.size() < 2) y_.AddError(it->second, fmt::format("funnel '{}' needs at least two KPIs", name));
      cat_.funnels[name] = std::move(steps);
    }
  }

  // Export dimensions must be the KPI's (known once its inputs are built).
  void CheckExports() {
    for (const auto& k : cat_.kpis) {
      const auto dims = cat_.KpiDimensions(k);
      for (size_t i = 0; i < k.exports.size(); ++i) {
        for (const auto& d : k.exports[i].group_by) {
          if (std::find(dims.begin(), dims.end(), d) != dims.end()) continue;
          std::string list;
          for (const auto& x : dims) list += (list.empty() ? "" : ", ") + x;
          y_.AddError(export_nodes_[k.name][i]["group_by"],
                      fmt::format("KPI '{}' cannot be exported by '{}' (its dimensions: {})", k.name, d,
                                  list.empty() ? "none" : list));
        }
      }
    }
  }

  void ParseTarget(const YAML::Node& t, KpiDef* k) {
    if (!t.IsMap()) {
      y_.AddError(t, "target must be a map: {direction: higher|lower, excellent: x, good: y, warning: z}");
      return;
    }
    y_.CheckKeys(t, {"direction", "excellent", "good", "warning", "critical"});
    Target target;
    const auto dir = y_.Scalar(t, "direction", false).value_or("higher");
    if (dir != "higher" && dir != "lower") {
      y_.AddError(t["direction"], fmt::format("direction '{}' must be higher or lower (which way is better)", dir));
      return;
    }
    target.higher_is_better = dir == "higher";
    std::vector<std::pair<const char*, std::optional<double>*>> bands = {{"excellent", &target.excellent},
                                                                         {"good", &target.good},
                                                                         {"warning", &target.warning},
                                                                         {"critical", &target.critical}};
    std::optional<double> prev;
    const char* prev_name = nullptr;
    for (auto& [name, slot] : bands) {
      const auto v = y_.Scalar(t, name, false);
      if (!v) continue;
      double d = 0;
      auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
      if (ec != std::errc() || ptr != v->data() + v->size()) {
        y_.AddError(t[name], fmt::format("target {} '{}' must be a number", name, *v));
        return;
      }
      if (prev && (target.higher_is_better ? d > *prev : d < *prev)) {
        y_.AddError(t[name], fmt::format("target {} ({}) must be {} than {} ({}) when {} is better", name, d,
                                         target.higher_is_better ? "lower" : "higher", prev_name, *prev, dir));
        return;
      }
      *slot = d;
      prev = d;
      prev_name = name;
    }
    // `critical` names the edge below which a value is critical: the floor
    // of the warning band ("below minimum acceptable"), as `warning` does.
    if (target.critical && target.warning && *target.critical != *target.warning) {
      y_.AddError(t["critical"], fmt::format("target critical ({}) and warning ({}) name the same edge, the least "
                                             "acceptable value (worse is critical): set one of them",
                                             *target.critical, *target.warning));
      return;
    }
    if (target.critical) target.warning = target.critical;
    if (!target.excellent && !target.good && !target.warning) {
      y_.AddError(t, "target needs at least one threshold: excellent, good, warning (or critical)");
      return;
    }
    k->target = target;
  }

  // Replaces references to other KPIs by their (inlined) formulas; reports
  // cycles with the path.
  void InlineKpiRefs() {
    std::map<std::string, int> state;  // 0 new, 1 visiting, 2 done
    std::function<bool(size_t, std::vector<std::string>*)> visit = [&](size_t ki, std::vector<std::string>* path) {
      auto& k = cat_.kpis[ki];
      if (state[k.name] == 2) return true;
      if (state[k.name] == 3) return false;  // failed already, error reported
      if (state[k.name] == 1) {
        std::string cycle;
        bool on = false;
        for (const auto& p : *path) {
          on |= p == k.name;
          if (on) cycle += p + " -> ";
        }
        y_.AddError(formula_nodes_[k.name], fmt::format("KPI '{}' is part of a cycle: {}{}", k.name, cycle, k.name));
        return false;
      }
      state[k.name] = 1;
      path->push_back(k.name);
      bool ok = true;
      std::function<void(Expr*)> subst = [&](Expr* e) {
        if (!ok) return;
        if (e->op == Expr::Op::kRef && e->ref >= kKpiRefBase && e->ref < kConstBase) {
          const auto& target_name = kpi_names_[static_cast<size_t>(e->ref - kKpiRefBase)];
          size_t ti = cat_.kpis.size();
          for (size_t i = 0; i < cat_.kpis.size(); ++i) {
            if (cat_.kpis[i].name == target_name) ti = i;
          }
          if (ti == cat_.kpis.size()) {  // that KPI had errors of its own
            ok = false;
            return;
          }
          if (!visit(ti, path)) {
            ok = false;
            return;
          }
          const std::string window = e->window;
          *e = cat_.kpis[ti].expr;
          if (!window.empty()) {
            std::function<void(Expr*)> set_window = [&](Expr* x) {
              if (x->op == Expr::Op::kRef && x->window.empty()) x->window = window;
              for (auto& a : x->args) set_window(&a);
            };
            set_window(e);
          }
          return;
        }
        for (auto& a : e->args) subst(&a);
      };
      subst(&k.expr);
      path->pop_back();
      state[k.name] = ok ? 2 : 3;
      return ok;
    };
    for (size_t i = 0; i < cat_.kpis.size(); ++i) {
      std::vector<std::string> path;
      if (state[cat_.kpis[i].name] != 2 && !visit(i, &path)) return;
    }
    for (auto& k : cat_.kpis) BuildInputs(&k);
  }

  YamlReader y_;
  Catalog cat_;
  std::vector<std::string> kpi_names_;
  std::map<std::string, YAML::Node> formula_nodes_;
  std::map<std::string, std::vector<YAML::Node>> export_nodes_;
};

}  // namespace

absl::StatusOr<Catalog> ParseCatalog(std::string_view yaml_text, std::string_view filename) {
  return CatalogParser(filename).Parse(yaml_text);
}

absl::StatusOr<Catalog> LoadCatalogFile(const std::string& path) {
  auto text = YamlReader::ReadFile(path, "KPI file");
  if (!text.ok()) return text.status();
  return ParseCatalog(*text, path);
}

}  // namespace kpistream::kpi
