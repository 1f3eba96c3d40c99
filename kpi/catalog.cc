#include "kpi/catalog.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <yaml-cpp/yaml.h>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "kpi/alert_template.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>

namespace kpistream::kpi {

namespace pb = google::protobuf;

std::string_view AggregationName(Aggregation a) {
  switch (a) {
    case Aggregation::kCount:
      return "count";
    case Aggregation::kSum:
      return "sum";
    case Aggregation::kMin:
      return "min";
    case Aggregation::kMax:
      return "max";
    case Aggregation::kAvg:
      return "avg";
    case Aggregation::kDistinct:
      return "distinct";
    case Aggregation::kQuantile:
      return "quantile";
    case Aggregation::kLast:
      return "last";
  }
  return "?";
}

state::ValueKind PartialKind(Aggregation a) {
  switch (a) {
    case Aggregation::kDistinct:
      return state::ValueKind::kHll;
    case Aggregation::kQuantile:
      return state::ValueKind::kSketch;
    case Aggregation::kLast:
      return state::ValueKind::kLast;
    default:
      return state::ValueKind::kAgg;
  }
}

std::string_view AlertKindName(AlertKind k) {
  switch (k) {
    case AlertKind::kThreshold:
      return "threshold";
    case AlertKind::kChange:
      return "change";
    case AlertKind::kAnomaly:
      return "anomaly";
    case AlertKind::kAbsence:
      return "absence";
    case AlertKind::kFreshness:
      return "freshness";
  }
  return "?";
}

bool Compare(CompareOp op, double lhs, double rhs) {
  switch (op) {
    case CompareOp::kGt:
      return lhs > rhs;
    case CompareOp::kGe:
      return lhs >= rhs;
    case CompareOp::kLt:
      return lhs < rhs;
    case CompareOp::kLe:
      return lhs <= rhs;
  }
  return false;
}

std::string_view CompareOpName(CompareOp op) {
  switch (op) {
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
  }
  return "?";
}

std::string_view BandName(Band s) {
  switch (s) {
    case Band::kUnknown:
      return "unknown";
    case Band::kCritical:
      return "critical";
    case Band::kWarning:
      return "warning";
    case Band::kGood:
      return "good";
    case Band::kExcellent:
      return "excellent";
  }
  return "unknown";
}

Band Target::Classify(std::optional<double> v) const {
  if (!v) return Band::kUnknown;
  auto at_least = [&](const std::optional<double>& t) { return t && (higher_is_better ? *v >= *t : *v <= *t); };
  if (critical && !at_least(critical)) return Band::kCritical;
  if (at_least(excellent)) return Band::kExcellent;
  if (at_least(good)) return Band::kGood;
  if (at_least(warning)) return Band::kWarning;
  if (!warning && !good && !excellent) return Band::kUnknown;
  return Band::kCritical;
}

const MeasureDef* Catalog::FindMeasure(std::string_view name) const {
  for (const auto& m : measures) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

const KpiDef* Catalog::FindKpi(std::string_view name) const {
  for (const auto& k : kpis) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

std::vector<std::string> Catalog::KpiDimensions(const KpiDef& kpi) const {
  std::vector<std::string> dims;
  bool first = true;
  for (const auto& in : kpi.inputs) {
    if (!in.group_dim.empty()) return {};  // counts groups: not groupable itself
  }
  for (int mi : kpi.measures) {
    const auto& gb = measures[mi].group_by;
    if (first) {
      dims = gb;
      first = false;
      continue;
    }
    std::erase_if(dims, [&](const std::string& d) { return std::find(gb.begin(), gb.end(), d) == gb.end(); });
  }
  return dims;
}

namespace {

class CatalogParser {
 public:
  explicit CatalogParser(std::string_view filename) : file_(filename) {}

  absl::StatusOr<Catalog> Parse(std::string_view text) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          fmt::format("{}:{}:{}: YAML syntax error: {}", file_, e.mark.line + 1, e.mark.column + 1, e.msg));
    }
    if (!root.IsMap()) return Fail(root, "the catalog must be a map with 'measures' and 'kpis'");
    for (auto it = root.begin(); it != root.end(); ++it) {
      const auto key = it->first.as<std::string>();
      if (key != "measures" && key != "kpis" && key != "timezone" && key != "constants" && key != "alerts") {
        AddError(it->first,
                 fmt::format("unknown top-level key '{}' (expected measures, kpis, alerts, timezone, constants)", key));
      }
    }
    if (const auto tz = root["timezone"]) {
      absl::TimeZone z;
      if (!tz.IsScalar() || !absl::LoadTimeZone(tz.as<std::string>(), &z)) {
        AddError(tz, fmt::format("unknown time zone '{}' (use an IANA name such as UTC or Europe/Berlin)",
                                 tz.IsScalar() ? tz.as<std::string>() : std::string("?")));
      } else {
        cat_.timezone = tz.as<std::string>();
      }
    }
    if (const auto consts = root["constants"]) {
      if (!consts.IsMap()) {
        AddError(consts, "'constants' must be a map of name to number, e.g. {monthly_budget: 150000}");
      } else {
        for (auto it = consts.begin(); it != consts.end(); ++it) {
          const auto name = it->first.as<std::string>();
          const auto text = it->second.IsScalar() ? it->second.as<std::string>() : std::string();
          double v = 0;
          auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
          if (!ValidName(name) || ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
            AddError(it->first, fmt::format("constant '{}' must be a name and a number", name));
            continue;
          }
          cat_.constants[name] = v;
        }
      }
    }
    const auto measures = root["measures"];
    if (!measures || !measures.IsMap() || measures.size() == 0) {
      return Fail(root, "'measures' must be a non-empty map of measure name to definition");
    }
    for (auto it = measures.begin(); it != measures.end(); ++it) ParseMeasure(it->first, it->second);
    const auto kpis = root["kpis"];
    if (kpis && !kpis.IsMap()) AddError(kpis, "'kpis' must be a map of KPI name to definition");
    if (kpis && kpis.IsMap()) {
      for (auto it = kpis.begin(); it != kpis.end(); ++it) kpi_names_.push_back(it->first.as<std::string>());
      for (auto it = kpis.begin(); it != kpis.end(); ++it) ParseKpi(it->first, it->second);
      InlineKpiRefs();
    }
    if (const auto alerts = root["alerts"]) {
      if (!alerts.IsMap()) {
        AddError(alerts, "'alerts' must be a map of alert name to rule");
      } else {
        for (auto it = alerts.begin(); it != alerts.end(); ++it) ParseAlert(it->first, it->second);
      }
    }
    if (!errors_.empty()) {
      std::string all;
      for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
      return absl::InvalidArgumentError(all);
    }
    return std::move(cat_);
  }

 private:
  std::string Where(const YAML::Node& n) const {
    const auto m = n.Mark();
    if (m.is_null()) return std::string(file_);
    return fmt::format("{}:{}:{}", file_, m.line + 1, m.column + 1);
  }
  void AddError(const YAML::Node& n, std::string_view what) {
    errors_.push_back(fmt::format("{}: {}", Where(n), what));
  }
  absl::Status Fail(const YAML::Node& n, std::string_view what) {
    AddError(n, what);
    std::string all;
    for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
    return absl::InvalidArgumentError(all);
  }
  static bool ValidName(std::string_view s) {
    if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
  }
  std::optional<std::string> Scalar(const YAML::Node& parent, const char* key, bool required) {
    const auto n = parent[key];
    if (!n) {
      if (required) AddError(parent, fmt::format("missing required key '{}'", key));
      return std::nullopt;
    }
    if (!n.IsScalar()) {
      AddError(n, fmt::format("'{}' must be a single value", key));
      return std::nullopt;
    }
    return n.as<std::string>();
  }
  std::vector<std::pair<std::string, YAML::Node>> List(const YAML::Node& parent, const char* key) {
    std::vector<std::pair<std::string, YAML::Node>> out;
    const auto n = parent[key];
    if (!n) return out;
    if (!n.IsSequence()) {
      AddError(n, fmt::format("'{}' must be a list, e.g. [a, b]", key));
      return out;
    }
    for (const auto& item : n) {
      if (!item.IsScalar()) {
        AddError(item, fmt::format("items of '{}' must be single values", key));
        continue;
      }
      out.emplace_back(item.as<std::string>(), item);
    }
    return out;
  }
  void CheckKeys(const YAML::Node& def, std::initializer_list<std::string_view> known) {
    for (auto it = def.begin(); it != def.end(); ++it) {
      const auto k = it->first.as<std::string>();
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        std::string list;
        for (auto s : known) list += (list.empty() ? "" : ", ") + std::string(s);
        AddError(it->first, fmt::format("unknown key '{}' (known: {})", k, list));
      }
    }
  }

  static std::string FieldList(const pb::Descriptor* d, bool numeric) {
    std::string out;
    for (int i = 0; i < d->field_count(); ++i) {
      const auto* f = d->field(i);
      const bool is_num =
          f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE || f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32;
      const bool is_str =
          f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING || f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM;
      if ((numeric && is_num) || (!numeric && is_str && f->name() != "event_id")) {
        out += (out.empty() ? "" : ", ") + f->name();
      }
    }
    return out;
  }

  void ParseMeasure(const YAML::Node& key_node, const YAML::Node& def) {
    MeasureDef m;
    m.name = key_node.as<std::string>();
    if (!ValidName(m.name)) {
      AddError(key_node, fmt::format("measure name '{}' must be letters, digits and _", m.name));
      return;
    }
    if (cat_.FindMeasure(m.name)) {
      AddError(key_node, fmt::format("measure '{}' is defined twice", m.name));
      return;
    }
    if (!def.IsMap()) {
      AddError(def, fmt::format("measure '{}' must be a map (family, types, aggregation, ...)", m.name));
      return;
    }
    CheckKeys(def, {"family", "types", "aggregation", "field", "group_by", "bucket", "help", "filter", "lateness",
                    "max_groups"});
    const size_t errors_before = errors_.size();
    const auto family = Scalar(def, "family", true);
    if (!family) return;
    const auto fam = ParseFamily(*family);
    if (!fam) {
      AddError(def["family"], fmt::format("unknown family '{}' (known: campaign, product, crm)", *family));
      return;
    }
    m.family = *fam;
    const auto* desc = FamilyDescriptor(m.family);
    const auto* type_enum = desc->FindFieldByName("type")->enum_type();
    for (const auto& [t, node] : List(def, "types")) {
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
        AddError(node, fmt::format("unknown {} event type '{}' (known: {})", *family, t, known));
        continue;
      }
      m.types.push_back(v->number());
      m.type_names.push_back(t);
    }
    const auto agg = Scalar(def, "aggregation", true);
    if (!agg) return;
    static constexpr std::pair<std::string_view, Aggregation> kAggs[] = {
        {"count", Aggregation::kCount},       {"sum", Aggregation::kSum},  {"min", Aggregation::kMin},
        {"max", Aggregation::kMax},           {"avg", Aggregation::kAvg},  {"distinct", Aggregation::kDistinct},
        {"quantile", Aggregation::kQuantile}, {"last", Aggregation::kLast}};
    bool found = false;
    for (const auto& [n, a] : kAggs) {
      if (n == *agg) {
        m.aggregation = a;
        found = true;
      }
    }
    if (!found) {
      AddError(
          def["aggregation"],
          fmt::format("unknown aggregation '{}' (known: count, sum, min, max, avg, distinct, quantile, last)", *agg));
      return;
    }
    const auto field = Scalar(def, "field", m.aggregation != Aggregation::kCount);
    if (field) {
      m.field = *field;
      m.field_desc = desc->FindFieldByName(m.field);
      const bool numeric = m.aggregation != Aggregation::kDistinct;
      if (!m.field_desc) {
        AddError(def["field"], fmt::format("unknown field '{}' of {} events (known {} fields: {})", m.field, *family,
                                           numeric ? "numeric" : "string", FieldList(desc, numeric)));
      } else if (numeric && m.field_desc->cpp_type() != pb::FieldDescriptor::CPPTYPE_DOUBLE &&
                 m.field_desc->cpp_type() != pb::FieldDescriptor::CPPTYPE_INT32) {
        AddError(def["field"],
                 fmt::format("field '{}' is not numeric; {} needs one of: {}", m.field, *agg, FieldList(desc, true)));
      } else if (!numeric && m.field_desc->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING) {
        AddError(def["field"],
                 fmt::format("field '{}' is not a string; distinct needs one of: {}", m.field, FieldList(desc, false)));
      }
    }
    for (const auto& [g, node] : List(def, "group_by")) {
      const auto* f = desc->FindFieldByName(g);
      if (!f || g == "event_time" ||
          (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING && f->cpp_type() != pb::FieldDescriptor::CPPTYPE_ENUM &&
           f->cpp_type() != pb::FieldDescriptor::CPPTYPE_INT32)) {
        AddError(node,
                 fmt::format("cannot group {} events by '{}' (dimensions: {})", *family, g, FieldList(desc, false)));
        continue;
      }
      if (std::find(m.group_by.begin(), m.group_by.end(), g) != m.group_by.end()) {
        AddError(node, fmt::format("dimension '{}' is listed twice", g));
        continue;
      }
      m.group_by.push_back(g);
      m.group_by_desc.push_back(f);
    }
    if (m.group_by.size() > 8) AddError(def["group_by"], "at most 8 group_by dimensions per measure");
    if (const auto bucket = Scalar(def, "bucket", false)) {
      auto secs = ParseDuration(*bucket);
      if (!secs.ok()) {
        AddError(def["bucket"], std::string(secs.status().message()));
      } else if (!(*secs == 86400 || (*secs <= 3600 && 3600 % *secs == 0))) {
        AddError(def["bucket"],
                 fmt::format("bucket '{}' must divide one hour (e.g. 10s, 1m, 5m, 1h) or be 1d", *bucket));
      } else {
        m.bucket_seconds = *secs;
      }
    }
    if (const auto f = Scalar(def, "filter", false)) {
      auto compiled = Filter::Compile(*f, m.family);
      if (!compiled.ok()) {
        AddError(def["filter"], std::string(compiled.status().message()));
      } else {
        m.filter = std::make_shared<const Filter>(std::move(*compiled));
      }
    }
    if (const auto l = Scalar(def, "lateness", false)) {
      auto secs = ParseDuration(*l);
      if (!secs.ok()) {
        AddError(def["lateness"], std::string(secs.status().message()));
      } else {
        m.lateness_ms = *secs * 1000;
      }
    }
    if (const auto g = Scalar(def, "max_groups", false)) {
      uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(g->data(), g->data() + g->size(), n);
      if (ec != std::errc() || ptr != g->data() + g->size() || n < 1 || n > 1000000) {
        AddError(def["max_groups"], fmt::format("max_groups '{}' must be a whole number from 1 to 1000000", *g));
      } else {
        m.max_groups = static_cast<uint32_t>(n);
      }
    }
    if (errors_.size() == errors_before) cat_.measures.push_back(std::move(m));
  }

  void ParseKpi(const YAML::Node& key_node, const YAML::Node& def) {
    KpiDef k;
    k.name = key_node.as<std::string>();
    if (!ValidName(k.name)) {
      AddError(key_node, fmt::format("KPI name '{}' must be letters, digits and _", k.name));
      return;
    }
    if (cat_.FindKpi(k.name)) {
      AddError(key_node, fmt::format("KPI '{}' is defined twice", k.name));
      return;
    }
    if (!def.IsMap()) {
      AddError(def, fmt::format("KPI '{}' must be a map (help, unit, formula, windows)", k.name));
      return;
    }
    CheckKeys(def, {"help", "unit", "formula", "windows", "target"});
    k.help = Scalar(def, "help", false).value_or("");
    k.unit = Scalar(def, "unit", false).value_or("ratio");
    static constexpr std::string_view kUnits[] = {"ratio", "percent", "currency", "seconds", "count"};
    if (std::find(std::begin(kUnits), std::end(kUnits), k.unit) == std::end(kUnits)) {
      AddError(def["unit"], fmt::format("unknown unit '{}' (known: ratio, percent, currency, seconds, count)", k.unit));
    }
    const auto formula = Scalar(def, "formula", true);
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
      AddError(def["formula"], std::string(expr.status().message()));
      return;
    }
    if (auto st = CheckQuantileUse(*expr, false); !st.empty()) {
      AddError(def["formula"], fmt::format("formula \"{}\": {}", k.formula, st));
      return;
    }
    k.expr = std::move(*expr);
    formula_nodes_[k.name] = def["formula"];
    for (const auto& [w, node] : List(def, "windows")) {
      if (auto st = ValidateWindow(w); !st.ok()) {
        AddError(node, std::string(st.message()));
        continue;
      }
      k.windows.push_back(w);
    }
    if (k.windows.empty()) k.windows = {"1h", "24h"};
    if (const auto t = def["target"]) ParseTarget(t, &k);
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
            AddError(formula_nodes_[k->name], fmt::format("formula \"{}\": {}", k->formula, std::string(st.message())));
          }
        }
        if (parent && parent->op == Expr::Op::kGroupsAtLeast) {
          const auto& m = cat_.measures[static_cast<size_t>(in.measure)];
          if (std::find(m.group_by.begin(), m.group_by.end(), parent->name) == m.group_by.end()) {
            AddError(formula_nodes_[k->name],
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

  // "> 4", "<= -20%": the operator, the number and whether it had a '%'.
  std::optional<std::pair<CompareOp, double>> ParseCondition(const YAML::Node& n, bool percent_allowed) {
    const std::string text = n.IsScalar() ? n.as<std::string>() : std::string();
    std::string_view v = text;
    auto trim = [&v] {
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    };
    trim();
    CompareOp op;
    if (v.starts_with(">=")) {
      op = CompareOp::kGe, v.remove_prefix(2);
    } else if (v.starts_with("<=")) {
      op = CompareOp::kLe, v.remove_prefix(2);
    } else if (v.starts_with(">")) {
      op = CompareOp::kGt, v.remove_prefix(1);
    } else if (v.starts_with("<")) {
      op = CompareOp::kLt, v.remove_prefix(1);
    } else {
      AddError(n, fmt::format("condition '{}' must be an operator (>, >=, <, <=) and a number, e.g. \"> 4\"", text));
      return std::nullopt;
    }
    trim();
    bool percent = false;
    if (v.ends_with("%")) {
      percent = true;
      v.remove_suffix(1);
    }
    double d = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
    if (ec != std::errc() || ptr != v.data() + v.size() || !std::isfinite(d)) {
      AddError(n, fmt::format("condition '{}': '{}' is not a number", text, v));
      return std::nullopt;
    }
    if (percent && !percent_allowed) {
      AddError(n, fmt::format("condition '{}': write the threshold in the KPI's own unit, without '%' (a percent "
                              "KPI is already in percent: \"> 4\" means above 4 %)",
                              text));
      return std::nullopt;
    }
    return std::make_pair(op, percent ? d / 100 : d);
  }

  std::optional<int64_t> DurationKey(const YAML::Node& parent, const char* key, bool required) {
    const auto v = Scalar(parent, key, required);
    if (!v) return std::nullopt;
    auto secs = ParseDuration(*v);
    if (!secs.ok()) {
      AddError(parent[key], std::string(secs.status().message()));
      return std::nullopt;
    }
    return *secs;
  }

  void ParseAlert(const YAML::Node& key_node, const YAML::Node& def) {
    AlertRule r;
    r.name = key_node.as<std::string>();
    if (!ValidName(r.name)) {
      AddError(key_node, fmt::format("alert name '{}' must be letters, digits and '_'", r.name));
      return;
    }
    if (!def.IsMap()) {
      AddError(def, fmt::format("alert '{}' must be a map (kpi, window, condition, for, severity, ...)", r.name));
      return;
    }
    CheckKeys(def, {"kpi", "window", "condition", "target", "change", "anomaly", "absence", "freshness", "for",
                    "keep_firing_for", "severity", "labels", "annotations", "group_by", "filter"});
    const size_t errors_before = errors_.size();
    int kinds = 0;
    for (const char* k : {"condition", "target", "change", "anomaly", "absence", "freshness"}) kinds += def[k] ? 1 : 0;
    if (kinds != 1) {
      AddError(def, fmt::format("alert '{}' needs exactly one of: condition, target, change, anomaly, absence, "
                                "freshness",
                                r.name));
      return;
    }
    const bool on_kpi = !def["absence"] && !def["freshness"];
    if (on_kpi) {
      const auto kpi = Scalar(def, "kpi", true);
      if (!kpi) return;
      for (size_t i = 0; i < cat_.kpis.size(); ++i) {
        if (cat_.kpis[i].name == *kpi) r.kpi = static_cast<int>(i);
      }
      if (r.kpi < 0) {
        AddError(def["kpi"], fmt::format("alert '{}': unknown KPI '{}'", r.name, *kpi));
        return;
      }
      const auto& k = cat_.kpis[static_cast<size_t>(r.kpi)];
      r.window = Scalar(def, "window", false).value_or(k.windows.empty() ? std::string() : k.windows.front());
      if (auto st = ValidateWindow(r.window); !st.ok()) {
        AddError(def["window"] ? def["window"] : def, std::string(st.message()));
      }
      const auto dims = cat_.KpiDimensions(k);
      auto check_dim = [&](const std::string& d, const YAML::Node& n) {
        if (std::find(dims.begin(), dims.end(), d) == dims.end()) {
          std::string list;
          for (const auto& x : dims) list += (list.empty() ? "" : ", ") + x;
          AddError(n, fmt::format("alert '{}': '{}' is not a dimension of KPI '{}' (its dimensions: {})", r.name, d,
                                  k.name, list.empty() ? "none" : list));
        }
      };
      if (const auto g = Scalar(def, "group_by", false)) {
        r.group_by = *g;
        check_dim(r.group_by, def["group_by"]);
      }
      if (const auto f = def["filter"]) {
        if (!f.IsMap()) {
          AddError(f, "filter must be a map of dimension to value, e.g. {region: eu}");
        } else {
          for (auto it = f.begin(); it != f.end(); ++it) {
            const auto dim = it->first.as<std::string>();
            if (!it->second.IsScalar()) {
              AddError(it->second, fmt::format("filter value of '{}' must be a single value", dim));
              continue;
            }
            check_dim(dim, it->first);
            r.filter.emplace_back(dim, it->second.as<std::string>());
          }
        }
      }
    } else if (def["kpi"] || def["window"] || def["group_by"] || def["filter"]) {
      AddError(def,
               fmt::format("alert '{}': absence and freshness alerts take no kpi, window, group_by or filter", r.name));
    }
    if (const auto c = def["condition"]) {
      r.kind = AlertKind::kThreshold;
      if (auto cond = ParseCondition(c, false)) std::tie(r.op, r.threshold) = *cond;
    } else if (const auto t = def["target"]) {
      r.kind = AlertKind::kThreshold;
      const auto band = t.IsScalar() ? t.as<std::string>() : std::string();
      if (band == "critical") {
        r.target_band = Band::kCritical;
      } else if (band == "warning") {
        r.target_band = Band::kWarning;
      } else {
        AddError(t, fmt::format("alert '{}': target must be critical or warning (fires when the KPI's status is "
                                "that band or worse)",
                                r.name));
      }
      if (!cat_.kpis[static_cast<size_t>(r.kpi)].target) {
        AddError(t, fmt::format("alert '{}': KPI '{}' has no target to compare with", r.name,
                                cat_.kpis[static_cast<size_t>(r.kpi)].name));
      }
    } else if (const auto ch = def["change"]) {
      r.kind = AlertKind::kChange;
      if (!ch.IsMap()) {
        AddError(ch, "change must be a map: {compare_to: 7d, condition: \"< -20%\"}");
      } else {
        CheckKeys(ch, {"compare_to", "condition"});
        r.compare_to_s = DurationKey(ch, "compare_to", true).value_or(0);
        if (const auto c = ch["condition"]) {
          if (auto cond = ParseCondition(c, true)) std::tie(r.op, r.threshold) = *cond;
        } else {
          AddError(ch, "change needs a condition on the relative change, e.g. \"< -20%\"");
        }
      }
    } else if (const auto an = def["anomaly"]) {
      r.kind = AlertKind::kAnomaly;
      if (!an.IsMap()) {
        AddError(an, "anomaly must be a map: {period: 7d, periods: 4, k: 3, direction: both|up|down}");
      } else {
        CheckKeys(an, {"period", "periods", "k", "direction", "min_delta"});
        r.period_s = DurationKey(an, "period", false).value_or(r.period_s);
        auto num = [&](const char* key, double* out, double lo) {
          if (const auto v = Scalar(an, key, false)) {
            double d = 0;
            auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
            if (ec != std::errc() || ptr != v->data() + v->size() || !(d >= lo)) {
              AddError(an[key], fmt::format("anomaly {} must be a number >= {}", key, lo));
              return;
            }
            *out = d;
          }
        };
        double periods = r.periods;
        num("periods", &periods, 2);
        r.periods = static_cast<int>(std::min(periods, 52.0));
        num("k", &r.k, 0);
        num("min_delta", &r.min_delta, 0);
        const auto dir = Scalar(an, "direction", false).value_or("both");
        if (dir == "both" || dir == "up" || dir == "down") {
          r.direction = dir == "up" ? 1 : dir == "down" ? -1 : 0;
        } else {
          AddError(an["direction"], fmt::format("anomaly direction '{}' must be both, up or down", dir));
        }
      }
    } else if (const auto ab = def["absence"]) {
      r.kind = AlertKind::kAbsence;
      if (!ab.IsMap()) {
        AddError(ab, "absence must be a map: {family: product, for: 10m} (family optional: any event)");
      } else {
        CheckKeys(ab, {"family", "for"});
        if (const auto f = Scalar(ab, "family", false)) {
          auto fam = ParseFamily(*f);
          if (!fam) {
            AddError(ab["family"], fmt::format("family '{}' must be campaign, product or crm", *f));
          } else {
            r.family = *fam;
          }
        }
        r.max_age_s = DurationKey(ab, "for", true).value_or(0);
      }
    } else if (const auto fr = def["freshness"]) {
      r.kind = AlertKind::kFreshness;
      if (!fr.IsMap()) {
        AddError(fr, "freshness must be a map: {max: 5m}");
      } else {
        CheckKeys(fr, {"max"});
        r.max_age_s = DurationKey(fr, "max", true).value_or(0);
      }
    }
    r.for_s = DurationKey(def, "for", false).value_or(0);
    r.keep_firing_for_s = DurationKey(def, "keep_firing_for", false).value_or(0);
    r.severity = Scalar(def, "severity", false).value_or("warning");
    if (r.severity != "critical" && r.severity != "high" && r.severity != "warning" && r.severity != "info") {
      AddError(def["severity"], fmt::format("severity '{}' must be critical, high, warning or info", r.severity));
    }
    auto string_map = [&](const char* key, std::map<std::string, std::string>* out) {
      const auto m = def[key];
      if (!m) return;
      if (!m.IsMap()) {
        AddError(m, fmt::format("'{}' must be a map of name to text", key));
        return;
      }
      for (auto it = m.begin(); it != m.end(); ++it) {
        const auto name = it->first.as<std::string>();
        if (!ValidName(name) || !it->second.IsScalar()) {
          AddError(it->first, fmt::format("{} '{}' must be a name with a single text value", key, name));
          continue;
        }
        (*out)[name] = it->second.as<std::string>();
      }
    };
    string_map("labels", &r.labels);
    string_map("annotations", &r.annotations);
    for (const auto& reserved : {"alertname", "severity"}) {
      if (r.labels.count(reserved)) AddError(def["labels"], fmt::format("label '{}' is set by kpid", reserved));
    }
    for (const auto& [name, text] : r.annotations) {
      if (auto st = CheckAlertTemplate(text); !st.ok()) {
        AddError(def["annotations"][name], fmt::format("annotation '{}': {}", name, std::string(st.message())));
      }
    }
    for (const auto& a : cat_.alerts) {
      if (a.name == r.name) AddError(key_node, fmt::format("alert '{}' is defined twice", r.name));
    }
    if (errors_.size() == errors_before) cat_.alerts.push_back(std::move(r));
  }

  void ParseTarget(const YAML::Node& t, KpiDef* k) {
    if (!t.IsMap()) {
      AddError(t, "target must be a map: {direction: higher|lower, excellent: x, good: y, warning: z}");
      return;
    }
    CheckKeys(t, {"direction", "excellent", "good", "warning", "critical"});
    Target target;
    const auto dir = Scalar(t, "direction", false).value_or("higher");
    if (dir != "higher" && dir != "lower") {
      AddError(t["direction"], fmt::format("direction '{}' must be higher or lower (which way is better)", dir));
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
      const auto v = Scalar(t, name, false);
      if (!v) continue;
      double d = 0;
      auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
      if (ec != std::errc() || ptr != v->data() + v->size()) {
        AddError(t[name], fmt::format("target {} '{}' must be a number", name, *v));
        return;
      }
      if (prev && (target.higher_is_better ? d > *prev : d < *prev)) {
        AddError(t[name], fmt::format("target {} ({}) must be {} than {} ({}) when {} is better", name, d,
                                      target.higher_is_better ? "lower" : "higher", prev_name, *prev, dir));
        return;
      }
      *slot = d;
      prev = d;
      prev_name = name;
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
        AddError(formula_nodes_[k.name], fmt::format("KPI '{}' is part of a cycle: {}{}", k.name, cycle, k.name));
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

  std::string_view file_;
  Catalog cat_;
  std::vector<std::string> errors_;
  std::vector<std::string> kpi_names_;
  std::map<std::string, YAML::Node> formula_nodes_;
};

}  // namespace

absl::StatusOr<Catalog> ParseCatalog(std::string_view yaml_text, std::string_view filename) {
  // yaml-cpp reports some malformed documents (e.g. a list used as a map
  // key) by throwing from accessors; turn that into an error with its place.
  try {
    return CatalogParser(filename).Parse(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}:{}:{}: {} (expected a name or a single value here)", filename,
                                                  e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", filename, e.what()));
  }
}

absl::StatusOr<Catalog> LoadCatalogFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open the KPI file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseCatalog(ss.str(), path);
}

}  // namespace kpistream::kpi
