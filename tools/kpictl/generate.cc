#include "tools/kpictl/generate.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "kpi/alert_template.h"
#include "kpi/prometheus_names.h"

namespace kpistream::tools {

namespace {

using nlohmann::json;

const json kDatasource = {{"type", "prometheus"}, {"uid", "${datasource}"}};

// Grafana's unit ids (packages/grafana-data valueFormats): ratio values are
// 0..1, percent values 0..100.
std::string GrafanaUnit(const std::string& unit) {
  if (unit == "ratio") return "percentunit";
  if (unit == "percent") return "percent";
  if (unit == "seconds") return "s";
  if (unit == "currency") return "none";
  return "short";
}

// The target's bands as Grafana threshold steps (a step's colour applies
// from its value up): higher-is-better starts red and turns orange, green,
// blue at warning, good, excellent; lower-is-better starts at its best band
// and turns worse at each threshold.
json Thresholds(const std::optional<kpi::Target>& target) {
  json steps = json::array();
  if (!target) {
    steps.push_back({{"color", "text"}, {"value", nullptr}});
    return {{"mode", "absolute"}, {"steps", steps}};
  }
  std::vector<std::pair<double, std::string>> bands;  // best first
  if (target->excellent) bands.emplace_back(*target->excellent, "blue");
  if (target->good) bands.emplace_back(*target->good, "green");
  if (target->warning) bands.emplace_back(*target->warning, "orange");
  if (target->higher_is_better) {
    steps.push_back({{"color", "red"}, {"value", nullptr}});
    for (auto it = bands.rbegin(); it != bands.rend(); ++it)
      steps.push_back({{"color", it->second}, {"value", it->first}});
  } else {
    steps.push_back({{"color", bands.front().second}, {"value", nullptr}});
    for (size_t i = 0; i < bands.size(); ++i) {
      steps.push_back({{"color", i + 1 < bands.size() ? bands[i + 1].second : "red"}, {"value", bands[i].first}});
    }
  }
  return {{"mode", "absolute"}, {"steps", steps}};
}

std::string Quote(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// The KPI over the dashboard's $window, or its own first window when it has
// no such window (`or on()`: the right side only when the left is empty).
std::string KpiExpr(const kpi::KpiDef& k, const std::string& breakdown = "", const std::string& extra = "") {
  const auto name = kpi::KpiMetricName(k);
  auto sel = [&](const std::string& window) {
    return fmt::format("{}{{window=\"{}\",breakdown=\"{}\"{}}}", name, window, Quote(breakdown), extra);
  };
  return fmt::format("{} or on() {}", sel("$window"), sel(k.windows.front()));
}

struct Layout {
  int next_id = 1;
  int y = 0;
  json panels = json::array();
  int row_x = 0, row_h = 0;
  void Row(const std::string& title) {
    Flush();
    panels.push_back({{"type", "row"},
                      {"title", title},
                      {"id", next_id++},
                      {"collapsed", false},
                      {"gridPos", {{"x", 0}, {"y", y}, {"w", 24}, {"h", 1}}},
                      {"panels", json::array()}});
    y += 1;
  }
  void Add(json panel, int w, int h) {
    if (row_x + w > 24) Flush();
    panel["id"] = next_id++;
    panel["gridPos"] = {{"x", row_x}, {"y", y}, {"w", w}, {"h", h}};
    panel["datasource"] = kDatasource;
    panels.push_back(std::move(panel));
    row_x += w;
    row_h = std::max(row_h, h);
  }
  void Flush() {
    y += row_h;
    row_x = 0;
    row_h = 0;
  }
};

json Target(const std::string& ref, const std::string& expr, const std::string& legend, bool instant,
            bool table = false) {
  json t = {{"refId", ref},       {"expr", expr},     {"legendFormat", legend}, {"datasource", kDatasource},
            {"instant", instant}, {"range", !instant}};
  if (table) t["format"] = "table";
  return t;
}

json StatPanel(const kpi::KpiDef& k) {
  return {
      {"type", "stat"},
      {"title", k.name},
      {"description", k.help},
      {"targets", {Target("A", KpiExpr(k), "{{window}}", true)}},
      {"fieldConfig",
       {{"defaults",
         {{"unit", GrafanaUnit(k.unit)}, {"thresholds", Thresholds(k.target)}, {"color", {{"mode", "thresholds"}}}}},
        {"overrides", json::array()}}},
      {"options",
       {{"reduceOptions", {{"calcs", {"lastNotNull"}}, {"fields", ""}, {"values", false}}},
        {"colorMode", k.target ? "background" : "value"},
        {"graphMode", "area"},
        {"textMode", "value"},
        {"justifyMode", "auto"},
        {"orientation", "auto"}}}};
}

json TrendPanel(const kpi::KpiDef& k) {
  return {{"type", "timeseries"},
          {"title", k.name + " over time"},
          {"description", k.help},
          {"targets", {Target("A", KpiExpr(k), k.name + " ({{window}})", false)}},
          {"fieldConfig",
           {{"defaults",
             {{"unit", GrafanaUnit(k.unit)},
              {"thresholds", Thresholds(k.target)},
              {"custom", {{"thresholdsStyle", {{"mode", k.target ? "line" : "off"}}}}}}},
            {"overrides", json::array()}}}};
}

std::string DimFilter(const kpi::ExportSpec& e) {
  std::string out;
  for (const auto& d : e.group_by) out += fmt::format(",{}=~\"${}\"", d, d);
  return out;
}

std::string Legend(const kpi::ExportSpec& e) {
  std::string out;
  for (const auto& d : e.group_by) out += (out.empty() ? "" : " · ") + ("{{" + d + "}}");
  return out;
}

json BreakdownPanel(const kpi::KpiDef& k, const kpi::ExportSpec& e) {
  const auto breakdown = kpi::BreakdownLabel(e);
  const std::string expr =
      fmt::format("{}({})", e.ascending ? "sort" : "sort_desc", KpiExpr(k, breakdown, DimFilter(e)));
  std::string title = fmt::format("{} by {}", k.name, breakdown);
  if (e.top > 0) title += fmt::format(" ({} {} and the rest)", e.ascending ? "lowest" : "top", e.top);
  return {
      {"type", "bargauge"},
      {"title", title},
      {"description", k.help},
      {"targets", {Target("A", expr, Legend(e), true)}},
      {"fieldConfig",
       {{"defaults",
         {{"unit", GrafanaUnit(k.unit)}, {"thresholds", Thresholds(k.target)}, {"color", {{"mode", "thresholds"}}}}},
        {"overrides", json::array()}}},
      {"options",
       {{"orientation", "horizontal"},
        {"displayMode", "gradient"},
        {"showUnfilled", true},
        {"reduceOptions", {{"calcs", {"lastNotNull"}}, {"fields", ""}, {"values", false}}}}}};
}

json FunnelPanel(const kpi::Catalog& cat, const std::string& name, const std::vector<int>& steps) {
  // One window for every step: the first the steps share, else each's first.
  std::string window;
  for (const auto& w : cat.kpis[static_cast<size_t>(steps.front())].windows) {
    bool all = true;
    for (int s : steps) {
      const auto& ws = cat.kpis[static_cast<size_t>(s)].windows;
      all = all && std::find(ws.begin(), ws.end(), w) != ws.end();
    }
    if (all) {
      window = w;
      break;
    }
  }
  json targets = json::array();
  std::string title;
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto& k = cat.kpis[static_cast<size_t>(steps[i])];
    const auto w = window.empty() ? k.windows.front() : window;
    targets.push_back(Target(std::string(1, static_cast<char>('A' + i)),
                             fmt::format("{}{{window=\"{}\",breakdown=\"\"}}", kpi::KpiMetricName(k), w),
                             fmt::format("{}. {}", i + 1, k.name), true));
    title += (title.empty() ? "" : " → ") + k.name;
  }
  return {{"type", "bargauge"},
          {"title", fmt::format("Funnel: {}{}", title, window.empty() ? "" : " (" + window + ")")},
          {"description", "The catalog's funnel '" + name + "', from the top down."},
          {"targets", targets},
          {"fieldConfig",
           {{"defaults", {{"unit", "short"}, {"color", {{"mode", "palette-classic"}}}}}, {"overrides", json::array()}}},
          {"options",
           {{"orientation", "horizontal"},
            {"displayMode", "basic"},
            {"showUnfilled", true},
            {"reduceOptions", {{"calcs", {"lastNotNull"}}, {"fields", ""}, {"values", false}}}}}};
}

// The KPIs of a dashboard exported by signup_cohort, side by side per cohort.
json CohortTable(const std::vector<const kpi::KpiDef*>& kpis) {
  json targets = json::array();
  json rename = json::object();
  for (size_t i = 0; i < kpis.size(); ++i) {
    const std::string ref(1, static_cast<char>('A' + i));
    targets.push_back(Target(ref,
                             fmt::format("{}{{window=\"{}\",breakdown=\"signup_cohort\"}}",
                                         kpi::KpiMetricName(*kpis[i]), kpis[i]->windows.front()),
                             kpis[i]->name, true, /*table=*/true));
    rename["Value #" + ref] = kpis[i]->name;
  }
  json merge = {{"id", "merge"}, {"options", json::object()}};
  json organize = {{"id", "organize"},
                   {"options",
                    {{"excludeByName", {{"Time", true}, {"breakdown", true}, {"window", true}, {"__name__", true}}},
                     {"renameByName", rename}}}};
  json panel = {{"type", "table"},
                {"title", "Cohorts (by signup month)"},
                {"description", "Each row a signup cohort, each column a KPI exported by signup_cohort."},
                {"targets", targets}};
  panel["transformations"] = json::array({merge, organize});
  panel["fieldConfig"] = {{"defaults", {{"unit", "percent"}}}, {"overrides", json::array()}};
  return panel;
}

json Templating(const kpi::Catalog& cat, const std::vector<const kpi::KpiDef*>& kpis) {
  json list = json::array();
  list.push_back({{"name", "datasource"},
                  {"label", "Data source"},
                  {"type", "datasource"},
                  {"query", "prometheus"},
                  {"current", json::object()},
                  {"hide", 0}});
  std::vector<std::string> windows;
  for (const auto* k : kpis) {
    for (const auto& w : k->windows) {
      if (std::find(windows.begin(), windows.end(), w) == windows.end()) windows.push_back(w);
    }
  }
  json options = json::array();
  for (const auto& w : windows) options.push_back({{"text", w}, {"value", w}, {"selected", w == windows.front()}});
  std::string joined;
  for (const auto& w : windows) joined += (joined.empty() ? "" : ",") + w;
  list.push_back({{"name", "window"},
                  {"label", "Window"},
                  {"type", "custom"},
                  {"query", joined},
                  {"options", options},
                  {"current", {{"text", windows.front()}, {"value", windows.front()}}},
                  {"description", "KPIs without this window show their own first one."}});
  // One variable per exported dimension: its values from the first KPI
  // exporting it.
  std::set<std::string> seen;
  for (const auto* k : kpis) {
    for (const auto& e : k->exports) {
      for (const auto& d : e.group_by) {
        if (!seen.insert(d).second) continue;
        const auto q =
            fmt::format("label_values({}{{breakdown=\"{}\"}}, {})", kpi::KpiMetricName(*k), kpi::BreakdownLabel(e), d);
        list.push_back({{"name", d},
                        {"label", d},
                        {"type", "query"},
                        {"datasource", kDatasource},
                        {"query", {{"query", q}, {"refId", d}}},
                        {"definition", q},
                        {"refresh", 2},
                        {"includeAll", true},
                        {"multi", true},
                        {"allValue", ".*"},
                        {"current", {{"text", "All"}, {"value", "$__all"}}}});
      }
    }
  }
  (void)cat;
  return {{"list", list}};
}

json Dashboard(const std::string& uid, const std::string& title, json panels, json templating) {
  return {{"uid", uid},
          {"title", title},
          {"tags", {"kpistream"}},
          {"schemaVersion", 39},
          {"version", 1},
          {"editable", true},
          {"graphTooltip", 1},
          {"time", {{"from", "now-6h"}, {"to", "now"}}},
          {"refresh", "30s"},
          {"timezone", "browser"},
          {"templating", std::move(templating)},
          {"annotations", {{"list", json::array()}}},
          {"panels", std::move(panels)}};
}

std::string Title(const std::string& name) {
  std::string t = name;
  std::replace(t.begin(), t.end(), '_', ' ');
  if (!t.empty()) t[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(t[0])));
  return t;
}

json KpiDashboard(const kpi::Catalog& cat, const std::string& name) {
  std::vector<const kpi::KpiDef*> kpis;
  for (const auto& k : cat.kpis) {
    if (std::find(k.dashboards.begin(), k.dashboards.end(), name) != k.dashboards.end()) kpis.push_back(&k);
  }
  Layout l;
  l.Row("Now");
  for (const auto* k : kpis) l.Add(StatPanel(*k), 4, 4);
  if (auto f = cat.funnels.find(name); f != cat.funnels.end()) {
    l.Row("Funnel");
    l.Add(FunnelPanel(cat, name, f->second), 12, 7);
  }
  std::vector<const kpi::KpiDef*> cohorts;
  bool any_breakdown = false;
  for (const auto* k : kpis) {
    for (const auto& e : k->exports) {
      if (e.group_by == std::vector<std::string>{"signup_cohort"}) {
        cohorts.push_back(k);
      } else {
        any_breakdown = true;
      }
    }
  }
  if (any_breakdown) {
    l.Row("Breakdowns");
    for (const auto* k : kpis) {
      for (const auto& e : k->exports) {
        if (e.group_by != std::vector<std::string>{"signup_cohort"}) l.Add(BreakdownPanel(*k, e), 8, 8);
      }
    }
  }
  if (!cohorts.empty()) {
    l.Row("Cohorts");
    l.Add(CohortTable(cohorts), 24, 10);
  }
  l.Row("Trends");
  for (const auto* k : kpis) l.Add(TrendPanel(*k), 8, 6);
  l.Flush();
  return Dashboard("kpistream-" + name, "kpistream · " + Title(name), std::move(l.panels), Templating(cat, kpis));
}

json TimeSeries(const std::string& title, const std::string& unit,
                const std::vector<std::pair<std::string, std::string>>& queries, const std::string& help) {
  json targets = json::array();
  for (size_t i = 0; i < queries.size(); ++i) {
    targets.push_back(Target(std::string(1, static_cast<char>('A' + i)), queries[i].first, queries[i].second, false));
  }
  return {{"type", "timeseries"},
          {"title", title},
          {"description", help},
          {"targets", targets},
          {"fieldConfig", {{"defaults", {{"unit", unit}}}, {"overrides", json::array()}}}};
}

json OperationsDashboard() {
  Layout l;
  l.Row("Health");
  for (const auto& [metric, title] :
       std::vector<std::pair<std::string, std::string>>{{"kpistream_ready", "Ingesting"},
                                                        {"kpistream_caught_up", "Caught up"},
                                                        {"kpistream_kafka_reachable", "Kafka reachable"}}) {
    l.Add({{"type", "stat"},
           {"title", title},
           {"targets", {Target("A", "min(" + metric + ")", title, true)}},
           {"fieldConfig",
            {{"defaults",
              {{"mappings",
                {{{"type", "value"},
                  {"options",
                   {{"0", {{"text", "no"}, {"color", "red"}}}, {"1", {{"text", "yes"}, {"color", "green"}}}}}}}},
               {"color", {{"mode", "fixed"}}}}},
             {"overrides", json::array()}}},
           {"options", {{"colorMode", "background"}, {"reduceOptions", {{"calcs", {"lastNotNull"}}}}}}},
          4, 4);
  }
  l.Add({{"type", "stat"},
         {"title", "Freshness"},
         {"targets", {Target("A", "max(kpistream_freshness_seconds)", "freshness", true)}},
         {"fieldConfig",
          {{"defaults",
            {{"unit", "s"},
             {"thresholds",
              {{"mode", "absolute"},
               {"steps",
                {{{"color", "green"}, {"value", nullptr}},
                 {{"color", "orange"}, {"value", 60}},
                 {{"color", "red"}, {"value", 300}}}}}}}},
           {"overrides", json::array()}}},
         {"options", {{"colorMode", "background"}, {"reduceOptions", {{"calcs", {"lastNotNull"}}}}}}},
        4, 4);
  l.Add({{"type", "stat"},
         {"title", "Alerts firing"},
         {"targets", {Target("A", "count(ALERTS{alertstate=\"firing\"}) or vector(0)", "firing", true)}},
         {"options", {{"colorMode", "value"}, {"reduceOptions", {{"calcs", {"lastNotNull"}}}}}}},
        4, 4);
  l.Row("Ingest");
  l.Add(TimeSeries("Records applied and rejected", "ops",
                   {{"sum(rate(kpistream_records_applied_total[$__rate_interval]))", "applied"},
                    {"sum(rate(kpistream_records_rejected_total[$__rate_interval]))", "rejected"}},
                   "Records per second."),
        12, 7);
  l.Add(TimeSeries("Consumer lag by topic", "short", {{"sum by (topic) (kpistream_consumer_lag_records)", "{{topic}}"}},
                   "Records in Kafka not yet committed to state."),
        12, 7);
  l.Add(TimeSeries("Freshness", "s",
                   {{"kpistream_freshness_seconds", "all"}, {"kpistream_family_freshness_seconds", "{{family}}"}},
                   "now - event time of the newest event visible to queries."),
        12, 7);
  l.Add(TimeSeries("Dead letters by reason", "ops",
                   {{"sum by (reason) (rate(kpistream_records_rejected_total[$__rate_interval]))", "{{reason}}"}},
                   "Records sent to the dead-letter topic, per second."),
        12, 7);
  l.Row("State");
  l.Add(
      TimeSeries(
          "Commit latency", "s",
          {{"histogram_quantile(0.99, sum by (le) (rate(kpistream_commit_duration_seconds_bucket[$__rate_interval])))",
            "p99"},
           {"histogram_quantile(0.5, sum by (le) (rate(kpistream_commit_duration_seconds_bucket[$__rate_interval])))",
            "p50"}},
          "Partials and offsets in one RocksDB batch."),
      12, 7);
  l.Add(TimeSeries("RocksDB", "bytes",
                   {{"sum(kpistream_state_live_bytes)", "live data"},
                    {"sum(kpistream_state_memtable_bytes)", "memtables"},
                    {"sum(kpistream_state_block_cache_bytes)", "block cache"}},
                   "State store sizes."),
        12, 7);
  l.Add(TimeSeries(
            "Process", "bytes",
            {{"process_resident_memory_bytes", "resident memory"}, {"process_virtual_memory_bytes", "virtual memory"}},
            "kpid's memory (memory_budget_mb bounds the state's share)."),
        12, 7);
  l.Add(TimeSeries("CPU", "percentunit", {{"rate(process_cpu_seconds_total[$__rate_interval])", "cores"}},
                   "CPU time per second."),
        12, 7);
  l.Row("Serving");
  l.Add(TimeSeries("gRPC requests", "reqps",
                   {{"sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total[$__rate_interval]))",
                     "{{grpc_method}} {{grpc_code}}"}},
                   "Requests per second by method and status."),
        12, 7);
  l.Add(TimeSeries("gRPC latency p99", "s",
                   {{"histogram_quantile(0.99, sum by (le, grpc_method) "
                     "(rate(grpc_server_handling_seconds_bucket[$__rate_interval])))",
                     "{{grpc_method}}"}},
                   "Time to the status (for watch streams, their whole life)."),
        12, 7);
  l.Add(
      TimeSeries("KPI export", "short",
                 {{"kpistream_kpi_series", "series"}, {"kpistream_kpi_export_duration_seconds", "seconds per export"}},
                 "Exported KPI series and the time one export takes (once per commit and second)."),
      12, 7);
  l.Add(TimeSeries("Alerts", "short",
                   {{"count by (alertname) (ALERTS{alertstate=\"firing\"}) or vector(0)", "{{alertname}}"}},
                   "Firing alerts by rule."),
        12, 7);
  l.Flush();
  json templating = {{"list",
                      {{{"name", "datasource"},
                        {"label", "Data source"},
                        {"type", "datasource"},
                        {"query", "prometheus"},
                        {"current", json::object()}}}}};
  return Dashboard("kpistream-operations", "kpistream · Operating kpid", std::move(l.panels), std::move(templating));
}

}  // namespace

std::map<std::string, std::string> GrafanaDashboards(const kpi::Catalog& catalog) {
  std::set<std::string> names;
  for (const auto& k : catalog.kpis) names.insert(k.dashboards.begin(), k.dashboards.end());
  std::map<std::string, std::string> out;
  for (const auto& n : names) out["kpistream-" + n] = KpiDashboard(catalog, n).dump(2) + "\n";
  out["kpistream-operations"] = OperationsDashboard().dump(2) + "\n";
  return out;
}

std::map<std::string, std::string> GrafanaProvisioning(const std::string& dashboards_path) {
  return {{"dashboards.yaml", fmt::format(R"(# Grafana provisioning: load kpistream's dashboards from {}.
apiVersion: 1
providers:
  - name: kpistream
    folder: kpistream
    type: file
    disableDeletion: false
    allowUiUpdates: true
    options:
      path: {}
)",
                                          dashboards_path, dashboards_path)},
          {"datasources.yaml", R"(# Grafana provisioning: the Prometheus that scrapes kpid (set its URL).
apiVersion: 1
datasources:
  - name: Prometheus
    type: prometheus
    access: proxy
    url: http://prometheus:9090
    isDefault: true
)"}};
}

namespace {

// A ratio of two additive inputs times a constant: (a / b) * c, c / ...
struct Ratio {
  int num = -1, den = -1;
  double scale = 1;
};
std::optional<Ratio> AsRatio(const kpi::Expr& e) {
  using Op = kpi::Expr::Op;
  if (e.op == Op::kDiv && e.args.size() == 2 && e.args[0].op == Op::kRef && e.args[1].op == Op::kRef) {
    return Ratio{e.args[0].ref, e.args[1].ref, 1};
  }
  if (e.op == Op::kMul && e.args.size() == 2) {
    for (int i = 0; i < 2; ++i) {
      if (e.args[static_cast<size_t>(1 - i)].op != Op::kNum) continue;
      if (auto r = AsRatio(e.args[static_cast<size_t>(i)])) {
        r->scale *= e.args[static_cast<size_t>(1 - i)].num;
        return r;
      }
    }
  }
  return std::nullopt;
}

bool Additive(const kpi::Catalog& cat, const kpi::KpiInput& in) {
  const auto a = cat.measures[static_cast<size_t>(in.measure)].aggregation;
  return in.window.empty() && in.group_dim.empty() && (a == kpi::Aggregation::kCount || a == kpi::Aggregation::kSum);
}

std::string Duration(int64_t s) {
  if (s == 0) return "0s";
  if (s % 86400 == 0) return fmt::format("{}d", s / 86400);
  if (s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

std::string Num(double v) { return fmt::format("{:g}", v); }

// `text` with every `{{ name }}` (any blanks inside the braces) replaced by
// `to`. A plain scan: std::regex trips GCC 12's -Wmaybe-uninitialized in
// sanitizer builds, and the pattern is fixed.
std::string ReplacePlaceholder(const std::string& text, const std::string& name, const std::string& to) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t open = text.find("{{", i);
    if (open == std::string::npos) break;
    size_t j = text.find_first_not_of(" \t\n", open + 2);
    bool hit = j != std::string::npos && text.compare(j, name.size(), name) == 0;
    if (hit) {
      j = text.find_first_not_of(" \t\n", j + name.size());
      hit = j != std::string::npos && text.compare(j, 2, "}}") == 0;
    }
    out.append(text, i, open - i);
    if (hit) {
      out += to;
      i = j + 2;
    } else {
      out += "{{";
      i = open + 2;
    }
  }
  out.append(text, std::min(i, text.size()), std::string::npos);
  return out;
}

// kpid's annotation template in Prometheus' template language.
std::string PromTemplate(const std::string& text, const kpi::AlertRule& r, const kpi::Catalog& cat) {
  std::string out = text;
  auto rep = [&](const std::string& from, const std::string& to) { out = ReplacePlaceholder(out, from, to); };
  rep("$value", "{{ $value | printf \"%.4g\" }}");
  const auto threshold = kpi::AlertThreshold(r, r.kpi >= 0 ? &cat.kpis[static_cast<size_t>(r.kpi)] : nullptr);
  rep("$threshold", threshold ? kpi::FormatAlertValue(threshold) : "n/a");
  rep("$baseline", "the earlier value");
  rep("$kpi", r.kpi >= 0 ? cat.kpis[static_cast<size_t>(r.kpi)].name : "");
  rep("$window", r.window);
  rep("$unit", r.kpi >= 0 ? cat.kpis[static_cast<size_t>(r.kpi)].unit : "");
  rep("$severity", r.severity);
  return out;
}

// The rule's condition in PromQL, or why it cannot be written there.
std::optional<std::string> AlertExpr(const kpi::Catalog& cat, const kpi::AlertRule& r, std::string* why) {
  using K = kpi::AlertKind;
  if (r.kind == K::kFreshness) return fmt::format("kpistream_freshness_seconds > {}", r.max_age_s);
  if (r.kind == K::kAbsence) {
    if (!r.family) return fmt::format("time() - kpistream_newest_event_timestamp_seconds > {}", r.max_age_s);
    return fmt::format("kpistream_family_freshness_seconds{{family=\"{}\"}} > {}", kpi::FamilyName(*r.family),
                       r.max_age_s);
  }
  const auto& k = cat.kpis[static_cast<size_t>(r.kpi)];
  if (std::find(k.windows.begin(), k.windows.end(), r.window) == k.windows.end()) {
    *why = fmt::format("window {} is not one of {}'s exported windows", r.window, k.name);
    return std::nullopt;
  }
  if (r.kind == K::kAnomaly) {
    *why = "a robust z-score against past periods (median, MAD) has no PromQL form without recording rules per period";
    return std::nullopt;
  }
  std::string breakdown;
  if (!r.group_by.empty()) {
    const bool exported = std::any_of(k.exports.begin(), k.exports.end(), [&](const kpi::ExportSpec& e) {
      return e.group_by == std::vector<std::string>{r.group_by} && e.top == 0;
    });
    if (!exported) {
      *why =
          fmt::format("{} is not exported by {} alone (export: [{{group_by: [{}]}}])", k.name, r.group_by, r.group_by);
      return std::nullopt;
    }
    breakdown = r.group_by;
  }
  std::string filter;
  for (const auto& [d, v] : r.filter) {
    if (d != r.group_by) {
      *why = fmt::format("the filter on {} needs a breakdown by it", d);
      return std::nullopt;
    }
    filter += fmt::format(",{}=\"{}\"", d, Quote(v));
  }
  if (r.target_band) {
    if (!breakdown.empty()) {
      *why = "statuses are exported for ungrouped values only";
      return std::nullopt;
    }
    return fmt::format("kpistream_kpi_status{{kpi=\"{}\",window=\"{}\",status=~\"{}\"}} == 1", k.name, r.window,
                       *r.target_band == kpi::Band::kWarning ? "warning|critical" : "critical");
  }
  const auto sel =
      fmt::format("{}{{window=\"{}\",breakdown=\"{}\"{}}}", kpi::KpiMetricName(k), r.window, breakdown, filter);
  const auto op = std::string(kpi::CompareOpName(r.op));
  if (r.kind == K::kChange) {
    const auto past = fmt::format("({} offset {})", sel, Duration(r.compare_to_s));
    // In percent, as kpid's $value for change rules.
    return fmt::format("({} - {}) / abs({}) * 100 {} {}", sel, past, past, op, Num(r.threshold * 100));
  }
  return fmt::format("{} {} {}", sel, op, Num(r.threshold));
}

}  // namespace

std::string PrometheusRules(const kpi::Catalog& cat) {
  YAML::Emitter y;
  y << YAML::BeginMap << YAML::Key << "groups" << YAML::Value << YAML::BeginSeq;
  // Ratios re-aggregated from their exported parts.
  y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "kpistream-kpi-ratios";
  y << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
  for (const auto& k : cat.kpis) {
    if (k.exports.empty()) continue;
    const auto ratio = AsRatio(k.expr);
    if (!ratio || !Additive(cat, k.inputs[static_cast<size_t>(ratio->num)]) ||
        !Additive(cat, k.inputs[static_cast<size_t>(ratio->den)])) {
      continue;
    }
    auto part = [&](int input) {
      return fmt::format("sum by (window, breakdown) (kpistream_kpi_input{{kpi=\"{}\",input=\"{}\",breakdown!=\"\"}})",
                         k.name, cat.measures[static_cast<size_t>(k.inputs[static_cast<size_t>(input)].measure)].name);
    };
    std::string expr = fmt::format("{} / {}", part(ratio->num), part(ratio->den));
    if (ratio->scale != 1) expr += " * " + Num(ratio->scale);
    y << YAML::BeginMap << YAML::Key << "record" << YAML::Value
      << fmt::format("window_breakdown:{}:ratio_of_sums", kpi::KpiMetricName(k));
    y << YAML::Key << "expr" << YAML::Value << expr << YAML::EndMap;
  }
  y << YAML::EndSeq << YAML::EndMap;
  // The catalog's alert rules.
  std::vector<std::string> skipped;
  y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "kpistream-kpi-alerts";
  y << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : cat.alerts) {
    std::string why;
    const auto expr = AlertExpr(cat, r, &why);
    if (!expr) {
      skipped.push_back(fmt::format("{}: {}", r.name, why));
      continue;
    }
    y << YAML::BeginMap << YAML::Key << "alert" << YAML::Value << r.name;
    y << YAML::Key << "expr" << YAML::Value << *expr;
    if (r.for_s > 0) y << YAML::Key << "for" << YAML::Value << Duration(r.for_s);
    if (r.keep_firing_for_s > 0) y << YAML::Key << "keep_firing_for" << YAML::Value << Duration(r.keep_firing_for_s);
    y << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "severity" << YAML::Value << r.severity;
    if (r.kpi >= 0) y << YAML::Key << "kpi" << YAML::Value << cat.kpis[static_cast<size_t>(r.kpi)].name;
    for (const auto& [n, v] : r.labels) y << YAML::Key << n << YAML::Value << v;
    y << YAML::EndMap;
    if (!r.annotations.empty()) {
      y << YAML::Key << "annotations" << YAML::Value << YAML::BeginMap;
      for (const auto& [n, v] : r.annotations) y << YAML::Key << n << YAML::Value << PromTemplate(v, r, cat);
      y << YAML::EndMap;
    }
    y << YAML::EndMap;
  }
  y << YAML::EndSeq << YAML::EndMap;
  y << YAML::EndSeq << YAML::EndMap;
  std::string header =
      "# Prometheus rules for kpid's KPI series, generated by `kpictl rules` from the KPI file: do not edit, "
      "regenerate.\n"
      "# kpistream-kpi-ratios: each exported ratio re-aggregated from its parts (sum of numerators / sum of\n"
      "#   denominators over the breakdown's groups), equal to the ungrouped value; across replicas it stays right.\n"
      "# kpistream-kpi-alerts: the KPI file's alert rules, for teams who alert in Prometheus (kpid evaluates the\n"
      "#   same rules itself; use one or the other, or the alerts arrive twice).\n";
  for (const auto& s : skipped) header += "# Not expressible in PromQL, evaluated by kpid only: " + s + "\n";
  return header + y.c_str() + "\n";
}

std::vector<std::string> DashboardExpressions(const std::string& dashboard_json) {
  std::vector<std::string> out;
  const auto j = json::parse(dashboard_json, nullptr, false);
  if (j.is_discarded()) return out;
  std::function<void(const json&)> walk = [&](const json& panels) {
    for (const auto& p : panels) {
      if (p.contains("targets")) {
        for (const auto& t : p["targets"]) {
          if (t.contains("expr")) out.push_back(t["expr"].get<std::string>());
        }
      }
      if (p.contains("panels")) walk(p["panels"]);
    }
  };
  if (j.contains("panels")) walk(j["panels"]);
  if (j.contains("templating")) {
    for (const auto& v : j["templating"]["list"]) {
      if (v.value("type", "") == "query" && v["query"].is_object())
        out.push_back(v["query"]["query"].get<std::string>());
    }
  }
  return out;
}

}  // namespace kpistream::tools
