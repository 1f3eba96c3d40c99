#include "kpi/alert_rule_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "kpi/alert_template.h"

namespace kpistream::kpi {

namespace {

// "> 4", "<= -20%": the operator, the number and whether it had a '%'.
std::optional<std::pair<CompareOp, double>> ParseCondition(YamlReader* y, const YAML::Node& n, bool percent_allowed) {
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
    y->AddError(n, fmt::format("condition '{}' must be an operator (>, >=, <, <=) and a number, e.g. \"> 4\"", text));
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
    y->AddError(n, fmt::format("condition '{}': '{}' is not a number", text, v));
    return std::nullopt;
  }
  if (percent && !percent_allowed) {
    y->AddError(n, fmt::format("condition '{}': write the threshold in the KPI's own unit, without '%' (a percent "
                               "KPI is already in percent: \"> 4\" means above 4 %)",
                               text));
    return std::nullopt;
  }
  return std::make_pair(op, percent ? d / 100 : d);
}

// kpi, window, group_by and filter of a rule on a KPI; false if the KPI is
// unknown (nothing else can be checked then).
bool ReadKpiSubject(YamlReader* y, const YAML::Node& def, const Catalog& cat, AlertRule* r_out) {
  AlertRule& r = *r_out;
  const auto kpi = y->Scalar(def, "kpi", true);
  if (!kpi) return false;
  for (size_t i = 0; i < cat.kpis.size(); ++i) {
    if (cat.kpis[i].name == *kpi) r.kpi = static_cast<int>(i);
  }
  if (r.kpi < 0) {
    y->AddError(def["kpi"], fmt::format("alert '{}': unknown KPI '{}'", r.name, *kpi));
    return false;
  }
  const auto& k = cat.kpis[static_cast<size_t>(r.kpi)];
  r.window = y->Scalar(def, "window", false).value_or(k.windows.empty() ? std::string() : k.windows.front());
  if (auto st = ValidateWindow(r.window); !st.ok()) {
    y->AddError(def["window"] ? def["window"] : def, std::string(st.message()));
  }
  const auto dims = cat.KpiDimensions(k);
  auto check_dim = [&](const std::string& d, const YAML::Node& n) {
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) {
      std::string list;
      for (const auto& x : dims) list += (list.empty() ? "" : ", ") + x;
      y->AddError(n, fmt::format("alert '{}': '{}' is not a dimension of KPI '{}' (its dimensions: {})", r.name, d,
                                 k.name, list.empty() ? "none" : list));
    }
  };
  if (const auto g = y->Scalar(def, "group_by", false)) {
    r.group_by = *g;
    check_dim(r.group_by, def["group_by"]);
  }
  if (const auto f = def["filter"]) {
    if (!f.IsMap()) {
      y->AddError(f, "filter must be a map of dimension to value, e.g. {region: eu}");
    } else {
      for (auto it = f.begin(); it != f.end(); ++it) {
        const auto dim = it->first.as<std::string>();
        if (!it->second.IsScalar()) {
          y->AddError(it->second, fmt::format("filter value of '{}' must be a single value", dim));
          continue;
        }
        check_dim(dim, it->first);
        r.filter.emplace_back(dim, it->second.as<std::string>());
      }
    }
  }
  return true;
}

void ReadChange(YamlReader* y, const YAML::Node& ch, AlertRule* r_out) {
  AlertRule& r = *r_out;
  if (!ch.IsMap()) {
    y->AddError(ch, "change must be a map: {compare_to: 7d, condition: \"< -20%\"}");
  } else {
    y->CheckKeys(ch, {"compare_to", "condition"});
    r.compare_to_s = y->Duration(ch, "compare_to", true).value_or(0);
    if (const auto c = ch["condition"]) {
      if (auto cond = ParseCondition(y, c, true)) std::tie(r.op, r.threshold) = *cond;
    } else {
      y->AddError(ch, "change needs a condition on the relative change, e.g. \"< -20%\"");
    }
  }
}

void ReadAnomaly(YamlReader* y, const YAML::Node& an, AlertRule* r_out) {
  AlertRule& r = *r_out;
  if (!an.IsMap()) {
    y->AddError(an, "anomaly must be a map: {period: 7d, periods: 4, k: 3, direction: both|up|down}");
  } else {
    y->CheckKeys(an, {"period", "periods", "k", "direction", "min_delta"});
    r.period_s = y->Duration(an, "period", false).value_or(r.period_s);
    auto num = [&](const char* key, double* out, double lo) {
      if (const auto v = y->Scalar(an, key, false)) {
        double d = 0;
        auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
        if (ec != std::errc() || ptr != v->data() + v->size() || !(d >= lo)) {
          y->AddError(an[key], fmt::format("anomaly {} must be a number >= {}", key, lo));
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
    const auto dir = y->Scalar(an, "direction", false).value_or("both");
    if (dir == "both" || dir == "up" || dir == "down") {
      r.direction = dir == "up" ? 1 : dir == "down" ? -1 : 0;
    } else {
      y->AddError(an["direction"], fmt::format("anomaly direction '{}' must be both, up or down", dir));
    }
  }
}

void ReadAbsence(YamlReader* y, const YAML::Node& ab, AlertRule* r_out) {
  AlertRule& r = *r_out;
  if (!ab.IsMap()) {
    y->AddError(ab, "absence must be a map: {family: product, for: 10m} (family optional: any event)");
  } else {
    y->CheckKeys(ab, {"family", "for"});
    if (const auto f = y->Scalar(ab, "family", false)) {
      auto fam = ParseFamily(*f);
      if (!fam) {
        y->AddError(ab["family"], fmt::format("family '{}' must be campaign, product or crm", *f));
      } else {
        r.family = *fam;
      }
    }
    r.max_age_s = y->Duration(ab, "for", true).value_or(0);
  }
}

void ReadFreshness(YamlReader* y, const YAML::Node& fr, AlertRule* r_out) {
  AlertRule& r = *r_out;
  if (!fr.IsMap()) {
    y->AddError(fr, "freshness must be a map: {max: 5m}");
  } else {
    y->CheckKeys(fr, {"max"});
    r.max_age_s = y->Duration(fr, "max", true).value_or(0);
  }
}

// for, keep_firing_for, severity, labels and annotations.
void ReadDelivery(YamlReader* y, const YAML::Node& def, AlertRule* r_out) {
  AlertRule& r = *r_out;
  r.for_s = y->Duration(def, "for", false, /*zero_ok=*/true).value_or(0);
  r.keep_firing_for_s = y->Duration(def, "keep_firing_for", false, /*zero_ok=*/true).value_or(0);
  r.severity = y->Scalar(def, "severity", false).value_or("warning");
  if (r.severity != "critical" && r.severity != "high" && r.severity != "warning" && r.severity != "info") {
    y->AddError(def["severity"], fmt::format("severity '{}' must be critical, high, warning or info", r.severity));
  }
  auto string_map = [&](const char* key, std::map<std::string, std::string>* out) {
    const auto m = def[key];
    if (!m) return;
    if (!m.IsMap()) {
      y->AddError(m, fmt::format("'{}' must be a map of name to text", key));
      return;
    }
    for (auto it = m.begin(); it != m.end(); ++it) {
      const auto name = it->first.as<std::string>();
      if (!YamlReader::ValidName(name) || !it->second.IsScalar()) {
        y->AddError(it->first, fmt::format("{} '{}' must be a name with a single text value", key, name));
        continue;
      }
      (*out)[name] = it->second.as<std::string>();
    }
  };
  string_map("labels", &r.labels);
  string_map("annotations", &r.annotations);
  for (const auto& reserved : {"alertname", "severity"}) {
    if (r.labels.count(reserved)) y->AddError(def["labels"], fmt::format("label '{}' is set by kpid", reserved));
  }
  for (const auto& [name, text] : r.annotations) {
    if (auto st = CheckAlertTemplate(text); !st.ok()) {
      y->AddError(def["annotations"][name], fmt::format("annotation '{}': {}", name, std::string(st.message())));
    }
  }
}

}  // namespace

void ReadAlertRule(YamlReader* y, const YAML::Node& key_node, const YAML::Node& def, Catalog* cat) {
  AlertRule r;
  r.name = key_node.as<std::string>();
  if (!YamlReader::ValidName(r.name)) {
    y->AddError(key_node, fmt::format("alert name '{}' must be letters, digits and '_'", r.name));
    return;
  }
  if (!def.IsMap()) {
    y->AddError(def, fmt::format("alert '{}' must be a map (kpi, window, condition, for, severity, ...)", r.name));
    return;
  }
  y->CheckKeys(def, {"kpi", "window", "condition", "target", "change", "anomaly", "absence", "freshness", "for",
                     "keep_firing_for", "severity", "labels", "annotations", "group_by", "filter"});
  const size_t errors_before = y->ErrorCount();
  int kinds = 0;
  for (const char* k : {"condition", "target", "change", "anomaly", "absence", "freshness"}) kinds += def[k] ? 1 : 0;
  if (kinds != 1) {
    y->AddError(def, fmt::format("alert '{}' needs exactly one of: condition, target, change, anomaly, absence, "
                                 "freshness",
                                 r.name));
    return;
  }
  const bool on_kpi = !def["absence"] && !def["freshness"];
  if (on_kpi) {
    if (!ReadKpiSubject(y, def, *cat, &r)) return;
  } else if (def["kpi"] || def["window"] || def["group_by"] || def["filter"]) {
    y->AddError(
        def, fmt::format("alert '{}': absence and freshness alerts take no kpi, window, group_by or filter", r.name));
  }
  if (const auto c = def["condition"]) {
    r.kind = AlertKind::kThreshold;
    if (auto cond = ParseCondition(y, c, false)) std::tie(r.op, r.threshold) = *cond;
  } else if (const auto t = def["target"]) {
    r.kind = AlertKind::kThreshold;
    const auto band = t.IsScalar() ? t.as<std::string>() : std::string();
    if (band == "critical") {
      r.target_band = Band::kCritical;
    } else if (band == "warning") {
      r.target_band = Band::kWarning;
    } else {
      y->AddError(t, fmt::format("alert '{}': target must be critical or warning (fires when the KPI's status is "
                                 "that band or worse)",
                                 r.name));
    }
    if (!cat->kpis[static_cast<size_t>(r.kpi)].target) {
      y->AddError(t, fmt::format("alert '{}': KPI '{}' has no target to compare with", r.name,
                                 cat->kpis[static_cast<size_t>(r.kpi)].name));
    }
  } else if (const auto ch = def["change"]) {
    r.kind = AlertKind::kChange;
    ReadChange(y, ch, &r);
  } else if (const auto an = def["anomaly"]) {
    r.kind = AlertKind::kAnomaly;
    ReadAnomaly(y, an, &r);
  } else if (const auto ab = def["absence"]) {
    r.kind = AlertKind::kAbsence;
    ReadAbsence(y, ab, &r);
  } else if (const auto fr = def["freshness"]) {
    r.kind = AlertKind::kFreshness;
    ReadFreshness(y, fr, &r);
  }
  ReadDelivery(y, def, &r);
  for (const auto& a : cat->alerts) {
    if (a.name == r.name) y->AddError(key_node, fmt::format("alert '{}' is defined twice", r.name));
  }
  if (y->ErrorCount() == errors_before) cat->alerts.push_back(std::move(r));
}

}  // namespace kpistream::kpi
