#include "pipeline/catalog.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

namespace kpistream::pipeline {

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
  }
  return "?";
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

absl::StatusOr<int64_t> ParseDuration(std::string_view text) {
  if (text.size() < 2) {
    return absl::InvalidArgumentError(
        fmt::format("bad duration \"{}\": use a number and a unit s, m, h or d, e.g. 5m", text));
  }
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, n);
  const char unit = text.back();
  int64_t mult = 0;
  switch (unit) {
    case 's':
      mult = 1;
      break;
    case 'm':
      mult = 60;
      break;
    case 'h':
      mult = 3600;
      break;
    case 'd':
      mult = 86400;
      break;
  }
  if (ec != std::errc() || ptr != text.data() + text.size() - 1 || mult == 0 || n <= 0 || n > 3650 * 86400 / mult) {
    return absl::InvalidArgumentError(
        fmt::format("bad duration \"{}\": use a positive number and a unit s, m, h or d, e.g. 5m", text));
  }
  return n * mult;
}

absl::StatusOr<int64_t> ParseWindow(std::string_view text) {
  if (text == "all") return kAllTime;
  auto d = ParseDuration(text);
  if (!d.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("bad window \"{}\": use a duration such as 5m, 1h, 24h, 7d, "
                    "30d, or \"all\"",
                    text));
  }
  return d;
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
      if (key != "measures" && key != "kpis") {
        AddError(it->first, fmt::format("unknown top-level key '{}' (expected measures, kpis)", key));
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
      for (auto it = kpis.begin(); it != kpis.end(); ++it) ParseKpi(it->first, it->second);
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
    CheckKeys(def, {"family", "types", "aggregation", "field", "group_by", "bucket", "help"});
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
        {"count", Aggregation::kCount}, {"sum", Aggregation::kSum}, {"min", Aggregation::kMin},
        {"max", Aggregation::kMax},     {"avg", Aggregation::kAvg}, {"distinct", Aggregation::kDistinct}};
    bool found = false;
    for (const auto& [n, a] : kAggs) {
      if (n == *agg) {
        m.aggregation = a;
        found = true;
      }
    }
    if (!found) {
      AddError(def["aggregation"],
               fmt::format("unknown aggregation '{}' (known: count, sum, min, max, avg, distinct)", *agg));
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
      if (!f || g == "event_id" || g == "event_time" ||
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
    CheckKeys(def, {"help", "unit", "formula", "windows"});
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
      return std::nullopt;
    });
    if (!expr.ok()) {
      AddError(def["formula"], std::string(expr.status().message()));
      return;
    }
    k.expr = std::move(*expr);
    CollectRefs(k.expr, &k.measures);
    for (const auto& [w, node] : List(def, "windows")) {
      auto secs = ParseWindow(w);
      if (!secs.ok()) {
        AddError(node, std::string(secs.status().message()));
        continue;
      }
      k.windows.push_back(w);
    }
    if (k.windows.empty()) k.windows = {"1h", "24h"};
    cat_.kpis.push_back(std::move(k));
  }

  std::string_view file_;
  Catalog cat_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::StatusOr<Catalog> ParseCatalog(std::string_view yaml_text, std::string_view filename) {
  return CatalogParser(filename).Parse(yaml_text);
}

absl::StatusOr<Catalog> LoadCatalogFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open the KPI file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseCatalog(ss.str(), path);
}

}  // namespace kpistream::pipeline
