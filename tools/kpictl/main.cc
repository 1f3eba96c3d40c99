// kpictl: kpid's command-line client, for people and for scripts.
//   kpictl [--server host:port] [-o table|wide|json|yaml|csv] COMMAND ...
//     list | describe KPI | get KPI | range KPI | watch KPI... | alerts | rules | health
//     validate FILE                      a kpid.yaml or a KPI file
//     dashboards --catalog F --out DIR   Grafana dashboards + provisioning
//     rules --catalog F --out FILE       with --catalog: Prometheus rules
// Exit codes: 0 done; 1 kpid answered with an error (or is not serving);
// 2 the request is wrong (bad arguments, unknown KPI, invalid file);
// 3 kpid cannot be reached (unavailable, deadline); 4 refused
// (unauthenticated, permission denied).
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kpi/catalog.h"
#include "kpistream/v1/alerts.grpc.pb.h"
#include "kpistream/v1/kpi.grpc.pb.h"
#include "services/config.h"
#include "tools/kpictl/format.h"
#include "tools/kpictl/generate.h"

namespace v1 = kpistream::v1;
namespace tools = kpistream::tools;
using google::protobuf::util::TimeUtil;

namespace {

enum Exit { kOk = 0, kError = 1, kUsage = 2, kUnreachable = 3, kRefused = 4 };

// The gRPC status by name, and the exit code scripts can rely on.
const char* CodeName(grpc::StatusCode c) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(c);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : "UNKNOWN";
}

int Report(const grpc::Status& s) {
  fmt::print(stderr, "kpictl: {}: {}\n", CodeName(s.error_code()), s.error_message());
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kUsage;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kUnreachable;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kRefused;
    default:
      return kError;
  }
}

int Usage(const std::string& what) {
  fmt::print(stderr, "kpictl: {}\n", what);
  return kUsage;
}

struct Options {
  std::string server;
  std::string output = "table";
  bool json = false;  // --json, the old spelling of -o json
  double timeout_s = 10;
  bool tls = false;
  std::string ca_file, cert_file, key_file, token;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::shared_ptr<grpc::Channel> Connect(const Options& o) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!o.ca_file.empty()) ssl.pem_root_certs = ReadFile(o.ca_file);
    if (!o.cert_file.empty()) ssl.pem_cert_chain = ReadFile(o.cert_file);
    if (!o.key_file.empty()) ssl.pem_private_key = ReadFile(o.key_file);
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateChannel(o.server, creds);
}

std::unique_ptr<grpc::ClientContext> Context(const Options& o, bool deadline = true) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (deadline) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  }
  if (!o.token.empty()) ctx->AddMetadata("authorization", "Bearer " + o.token);
  return ctx;
}

std::string Json(const google::protobuf::Message& m, bool pretty = true) {
  std::string s;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = pretty;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &s, opts);
  return s;
}

// JSON is YAML: yaml-cpp reads it and writes it block-style.
std::string Yaml(const google::protobuf::Message& m) {
  YAML::Emitter e;
  e << YAML::Load(Json(m, false));
  return std::string(e.c_str()) + "\n";
}

// Prints a message as json or yaml; false for the table formats.
bool PrintStructured(const Options& o, const google::protobuf::Message& m) {
  if (o.output == "json") {
    fmt::print("{}", Json(m));
    return true;
  }
  if (o.output == "yaml") {
    fmt::print("{}", Yaml(m));
    return true;
  }
  return false;
}

void PrintRows(const Options& o, const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows) {
  fmt::print("{}", o.output == "csv" ? tools::Csv(header, rows) : tools::Table(header, rows));
}

bool Color() { return ::isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr; }

// The answer's groups as rows: one column per dimension, value, status.
// raw: full-precision numbers (CSV, for scripts) instead of formatted ones.
void AnswerRows(const v1::GetKpiResponse& r, const std::vector<std::string>& dims, bool color, bool raw,
                std::vector<std::vector<std::string>>* rows) {
  for (const auto& v : r.values()) {
    std::vector<std::string> row;
    for (const auto& d : dims) row.push_back(v.group().count(d) ? v.group().at(d) : "");
    if (raw) {
      row.push_back(v.has_value() ? fmt::format("{:.17g}", v.value()) : "");
    } else {
      row.push_back(tools::FormatValue(v.has_value() ? std::optional<double>(v.value()) : std::nullopt, r.unit()));
    }
    row.push_back(tools::ColorStatus(v.status(), color));
    rows->push_back(std::move(row));
  }
}

std::vector<std::string> SplitDims(const std::string& group_by) {
  std::vector<std::string> out;
  std::stringstream ss(group_by);
  for (std::string d; std::getline(ss, d, ',');) {
    d.erase(0, d.find_first_not_of(' '));
    d.erase(d.find_last_not_of(' ') + 1);
    if (!d.empty()) out.push_back(d);
  }
  return out;
}

bool AddFilters(const std::vector<std::string>& filters, google::protobuf::Map<std::string, std::string>* m) {
  for (const auto& f : filters) {
    const auto eq = f.find('=');
    if (eq == std::string::npos) {
      fmt::print(stderr, "kpictl: --filter {}: expected dim=value\n", f);
      return false;
    }
    (*m)[f.substr(0, eq)] = f.substr(eq + 1);
  }
  return true;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int Validate(const std::string& file) {
  const auto text = ReadFile(file);
  if (text.empty() && !std::filesystem::exists(file)) return Usage(file + ": cannot open");
  absl::StatusOr<kpistream::kpi::Catalog> cat;
  if (kpistream::services::LooksLikeKpidConfig(text)) {
    auto cfg = kpistream::services::ParseKpidConfig(text, file);
    if (!cfg.ok()) {
      fmt::print(stderr, "{}\n", std::string(cfg.status().message()));
      return kUsage;
    }
    cat = kpistream::services::LoadCatalogFor(*cfg);
  } else {
    cat = kpistream::kpi::ParseCatalog(text, file);
  }
  if (!cat.ok()) {
    fmt::print(stderr, "{}\n", std::string(cat.status().message()));
    return kUsage;
  }
  fmt::print("{}: OK ({} measures, {} KPIs, {} alert rules)\n", file, cat->measures.size(), cat->kpis.size(),
             cat->alerts.size());
  return kOk;
}

// Writes `files` under dir, or with check, compares them with what is
// there: 0 when equal, 1 naming each file that differs or is missing.
int WriteOrCheck(const std::filesystem::path& dir, const std::map<std::string, std::string>& files, bool check) {
  int differing = 0;
  for (const auto& [name, text] : files) {
    const auto path = dir / name;
    if (check) {
      std::ifstream in(path);
      std::stringstream have;
      have << in.rdbuf();
      if (!in || have.str() != text) {
        fmt::print(stderr, "kpictl: {} is not what the KPI file generates; regenerate it (without --check)\n",
                   path.string());
        ++differing;
      }
      continue;
    }
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  if (!check) fmt::print("wrote {} files under {}\n", files.size(), dir.string());
  return differing == 0 ? kOk : kError;
}

int Generate(bool rules, const std::string& catalog_file, const std::string& out, bool check) {
  auto cat = kpistream::kpi::LoadCatalogFile(catalog_file);
  if (!cat.ok()) {
    fmt::print(stderr, "{}\n", std::string(cat.status().message()));
    return kUsage;
  }
  if (rules) {
    const std::filesystem::path p(out);
    return WriteOrCheck(p.parent_path().empty() ? "." : p.parent_path(),
                        {{p.filename().string(), tools::PrometheusRules(*cat)}}, check);
  }
  std::map<std::string, std::string> files;
  for (const auto& [name, text] : tools::GrafanaDashboards(*cat)) files["dashboards/" + name + ".json"] = text;
  for (const auto& [name, text] : tools::GrafanaProvisioning("/var/lib/grafana/dashboards/kpistream")) {
    files["provisioning/" + name] = text;
  }
  return WriteOrCheck(out, files, check);
}

// `watch`: on a terminal, the current answers redrawn in place; otherwise
// one line per update (or one JSON object per line with -o json).
int Watch(const Options& o, v1::KpiService::Stub& stub, const v1::WatchKpisRequest& req) {
  auto ctx = Context(o, /*deadline=*/false);
  auto reader = stub.WatchKpis(ctx.get(), req);
  const bool tty = ::isatty(STDOUT_FILENO) && o.output != "json" && o.output != "yaml" && o.output != "csv";
  std::map<int, v1::GetKpiResponse> current;
  v1::WatchKpisResponse msg;
  while (reader->Read(&msg)) {
    if (o.output == "json") {
      fmt::print("{}\n", Json(msg, false));
      std::fflush(stdout);
      continue;
    }
    current[msg.query()] = msg.answer();
    if (!tty) {
      for (const auto& v : msg.answer().values()) {
        std::string group;
        for (const auto& [k, val] : v.group()) group += (group.empty() ? "" : ",") + k + "=" + val;
        fmt::print("{} {} {} {} {}\n", tools::FormatTime(Now()), msg.answer().kpi(), group.empty() ? "-" : group,
                   v.has_value() ? fmt::format("{:.17g}", v.value()) : "none", v.status());
      }
      std::fflush(stdout);
      continue;
    }
    // Home, clear, and the whole picture again: the screen never scrolls.
    std::string screen = "\x1b[H\x1b[2J";
    screen += fmt::format("kpictl watch  {}  {}\n\n", o.server, tools::FormatTime(Now()));
    std::vector<std::vector<std::string>> rows;
    for (const auto& [i, a] : current) {
      for (const auto& v : a.values()) {
        std::string group;
        for (const auto& [k, val] : v.group()) group += (group.empty() ? "" : ",") + k + "=" + val;
        rows.push_back({a.kpi(), a.window(), group.empty() ? "-" : group,
                        tools::FormatValue(v.has_value() ? std::optional<double>(v.value()) : std::nullopt, a.unit()),
                        tools::ColorStatus(v.status(), Color()), fmt::format("{:.1f} s", a.freshness_seconds())});
      }
    }
    screen += tools::Table({"KPI", "WINDOW", "GROUP", "VALUE", "STATUS", "FRESHNESS"}, rows);
    fmt::print("{}", screen);
    std::fflush(stdout);
  }
  const auto st = reader->Finish();
  return st.ok() || st.error_code() == grpc::StatusCode::CANCELLED ? kOk : Report(st);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kpictl: query kpid (gRPC), watch KPIs and alerts, check KPI files, generate dashboards and rules"};
  app.footer(
      "Output: -o table (default), wide, json, yaml, csv, anywhere on the line.\n"
      "Server: --server or KPISTREAM_SERVER (default 127.0.0.1:50051); token: --token or KPISTREAM_TOKEN.\n"
      "Times: RFC 3339, unix seconds, now, or relative (-1h, -30m).\n"
      "Exit codes: 0 done; 1 kpid answered with an error or is not serving; 2 a wrong request (arguments, unknown\n"
      "KPI, invalid file); 3 kpid unreachable; 4 refused (unauthenticated, permission denied).");
  app.require_subcommand(1);
  app.fallthrough();  // global options after the subcommand too
  Options o;
  const char* env_server = std::getenv("KPISTREAM_SERVER");
  o.server = env_server ? env_server : "127.0.0.1:50051";
  if (const char* t = std::getenv("KPISTREAM_TOKEN")) o.token = t;
  app.add_option("--server,--addr", o.server, "kpid's gRPC address")->capture_default_str();
  app.add_option("-o,--output", o.output, "table | wide | json | yaml | csv")
      ->check(CLI::IsMember({"table", "wide", "json", "yaml", "csv"}))
      ->capture_default_str();
  app.add_flag("--json", o.json, "the same as -o json");
  app.add_option("--timeout", o.timeout_s, "deadline of each call, seconds")->capture_default_str();
  app.add_flag("--tls", o.tls, "connect with TLS");
  app.add_option("--ca-file", o.ca_file, "CA certificates (PEM) to verify kpid with (--tls)");
  app.add_option("--cert-file", o.cert_file, "client certificate (PEM), for kpid's client authentication (--tls)");
  app.add_option("--key-file", o.key_file, "client key (PEM) (--tls)");
  app.add_option("--token", o.token, "bearer token");

  std::string kpi, window, group_by, step, file, order_by, start_s, end_s, catalog_file, out, severity;
  std::vector<std::string> filters, kpis, states, labels;
  int limit = 0;
  bool check = false;
  auto* list = app.add_subcommand("list", "the KPI catalog");
  auto* describe = app.add_subcommand("describe", "one KPI: formula, windows, dimensions, measures, target");
  describe->add_option("kpi", kpi)->required();
  auto* get = app.add_subcommand("get", "a KPI's value now (or at --end), optionally by group");
  get->add_option("kpi", kpi)->required();
  get->add_option("--window", window, "5m, 24h, 30d, all, today, mtd, ... (default: the KPI's first window)");
  get->add_option("--group-by", group_by, "dimensions, e.g. \"channel, region\"");
  get->add_option("--filter", filters, "dim=value (repeatable)");
  get->add_option("--end", end_s, "window end (default: now)");
  get->add_option("--order-by", order_by, "value | -value | group");
  get->add_option("--limit", limit, "at most this many groups");
  auto* range = app.add_subcommand("range", "a KPI's history at a step");
  range->add_option("kpi", kpi)->required();
  range->add_option("--start", start_s, "e.g. -6h")->required();
  range->add_option("--end", end_s, "default: now");
  range->add_option("--step", step, "e.g. 1m, 1h")->required();
  range->add_option("--window", window, "rolling: each point over this window ending there (e.g. 24h)");
  range->add_option("--group-by", group_by);
  range->add_option("--filter", filters, "dim=value (repeatable)");
  auto* watch = app.add_subcommand("watch", "KPIs live, redrawn in place as they change");
  watch->add_option("kpi", kpis, "one or more KPIs")->required();
  watch->add_option("--window", window, "for every KPI (default: each KPI's first window)");
  watch->add_option("--group-by", group_by);
  watch->add_option("--filter", filters, "dim=value (repeatable)");
  auto* alerts = app.add_subcommand("alerts", "active alerts");
  alerts->add_option("--state", states, "pending | firing | resolved (repeatable)");
  alerts->add_option("--severity", severity);
  alerts->add_option("--label", labels, "name=value (repeatable)");
  auto* rules = app.add_subcommand("rules", "the alert rules and their instances (with --catalog: Prometheus rules)");
  rules->add_option("--catalog", catalog_file, "generate Prometheus rules from this KPI file instead");
  rules->add_option("--out", out, "with --catalog: the rule file to write");
  rules->add_flag("--check", check, "with --catalog: compare with --out instead of writing");
  auto* health = app.add_subcommand("health", "is kpid serving reads, and ingesting");
  auto* validate = app.add_subcommand("validate", "check a kpid.yaml or a KPI file; every error with file:line:col");
  validate->add_option("file", file)->required();
  auto* dashboards =
      app.add_subcommand("dashboards", "Grafana dashboards (per `dashboards:` name, plus operations) and provisioning");
  dashboards->add_option("--catalog", catalog_file, "the KPI file")->required();
  dashboards->add_option("--out", out, "directory (OUT/dashboards, OUT/provisioning)")->required();
  dashboards->add_flag("--check", check, "compare with what is in OUT; exit 1 if they differ");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;
  }
  if (o.json) o.output = "json";

  if (validate->parsed()) return Validate(file);
  if (dashboards->parsed()) return Generate(false, catalog_file, out, check);
  if (rules->parsed() && !catalog_file.empty()) {
    if (out.empty()) return Usage("rules --catalog needs --out FILE");
    return Generate(true, catalog_file, out, check);
  }

  auto channel = Connect(o);
  auto stub = v1::KpiService::NewStub(channel);
  auto alert_stub = v1::AlertService::NewStub(channel);
  const bool color = Color();

  if (list->parsed() || describe->parsed()) {
    v1::ListKpisResponse resp;
    auto s = stub->ListKpis(Context(o).get(), v1::ListKpisRequest(), &resp);
    if (!s.ok()) return Report(s);
    if (describe->parsed()) {
      for (const auto& k : resp.kpis()) {
        if (k.name() != kpi) continue;
        if (PrintStructured(o, k)) return kOk;
        auto join = [](const auto& v) {
          std::string out;
          for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
          return out.empty() ? std::string("-") : out;
        };
        std::string target = "-";
        if (k.has_target()) {
          const auto& t = k.target();
          target = fmt::format("{} is better", t.direction());
          if (t.has_excellent()) target += ", excellent " + tools::FormatValue(t.excellent(), k.unit());
          if (t.has_good()) target += ", good " + tools::FormatValue(t.good(), k.unit());
          if (t.has_warning()) target += ", warning " + tools::FormatValue(t.warning(), k.unit());
        }
        fmt::print(
            "Name:        {}\nHelp:        {}\nUnit:        {}\nFormula:     {}\nWindows:     {}\n"
            "Dimensions:  {}\nMeasures:    {}\nTarget:      {}\n",
            k.name(), k.help(), k.unit(), k.formula(), join(k.windows()), join(k.dimensions()), join(k.measures()),
            target);
        return kOk;
      }
      return Usage(fmt::format("unknown KPI '{}' (kpictl list shows the catalog)", kpi));
    }
    if (PrintStructured(o, resp)) return kOk;
    std::vector<std::vector<std::string>> rows;
    const bool wide = o.output == "wide";
    for (const auto& k : resp.kpis()) {
      std::string windows, dims;
      for (const auto& w : k.windows()) windows += (windows.empty() ? "" : ",") + w;
      for (const auto& d : k.dimensions()) dims += (dims.empty() ? "" : ",") + d;
      std::vector<std::string> row{k.name(), k.unit(), windows, dims.empty() ? "-" : dims};
      if (wide) row.push_back(k.formula());
      row.push_back(k.help());
      rows.push_back(std::move(row));
    }
    std::vector<std::string> header{"NAME", "UNIT", "WINDOWS", "DIMENSIONS"};
    if (wide) header.push_back("FORMULA");
    header.push_back("HELP");
    PrintRows(o, header, rows);
    return kOk;
  }
  if (get->parsed()) {
    v1::GetKpiRequest req;
    req.set_kpi(kpi);
    req.set_window(window);
    req.set_group_by(group_by);
    req.set_order_by(order_by);
    req.set_limit(limit);
    if (!end_s.empty()) {
      auto t = tools::ParseTime(end_s, Now());
      if (!t.ok()) return Usage(std::string(t.status().message()));
      *req.mutable_end_time() = TimeUtil::SecondsToTimestamp(*t);
    }
    if (!AddFilters(filters, req.mutable_filter())) return kUsage;
    v1::GetKpiResponse resp;
    auto s = stub->GetKpi(Context(o).get(), req, &resp);
    if (!s.ok()) return Report(s);
    if (PrintStructured(o, resp)) return kOk;
    const auto dims = SplitDims(group_by);
    std::vector<std::vector<std::string>> rows;
    AnswerRows(resp, dims, color && o.output != "csv", o.output == "csv", &rows);
    std::vector<std::string> header;
    for (const auto& d : dims) header.push_back(d);
    header.push_back(resp.kpi() + " (" + resp.window() + ")");
    header.push_back("STATUS");
    PrintRows(o, header, rows);
    if (o.output == "table" || o.output == "wide") {
      fmt::print("\n{} to {}{}, freshness {}{}\n", tools::FormatTime(resp.start_time().seconds()),
                 tools::FormatTime(resp.end_time().seconds()), resp.rounded() ? " (rounded to the buckets)" : "",
                 tools::FormatValue(resp.freshness_seconds(), "seconds"),
                 o.output == "wide" ? ", state " + resp.consistency_token() : "");
      if (!resp.next_page_token().empty()) fmt::print("more groups: --page-token is in -o json\n");
    }
    return kOk;
  }
  if (range->parsed()) {
    v1::QueryRangeRequest req;
    req.set_kpi(kpi);
    auto start = tools::ParseTime(start_s, Now());
    auto end = tools::ParseTime(end_s.empty() ? "now" : end_s, Now());
    if (!start.ok()) return Usage(std::string(start.status().message()));
    if (!end.ok()) return Usage(std::string(end.status().message()));
    *req.mutable_start_time() = TimeUtil::SecondsToTimestamp(*start);
    *req.mutable_end_time() = TimeUtil::SecondsToTimestamp(*end);
    req.set_step(step);
    req.set_window(window);
    req.set_group_by(group_by);
    if (!AddFilters(filters, req.mutable_filter())) return kUsage;
    v1::QueryRangeResponse resp;
    auto s = stub->QueryRange(Context(o).get(), req, &resp);
    if (!s.ok()) return Report(s);
    if (PrintStructured(o, resp)) return kOk;
    const auto dims = SplitDims(group_by);
    std::vector<std::vector<std::string>> rows;
    for (const auto& series : resp.series()) {
      for (const auto& p : series.points()) {
        std::vector<std::string> row{tools::FormatTime(p.time().seconds())};
        for (const auto& d : dims) row.push_back(series.group().count(d) ? series.group().at(d) : "");
        const std::optional<double> v = p.has_value() ? std::optional<double>(p.value()) : std::nullopt;
        if (o.output == "csv") {
          row.push_back(v ? fmt::format("{:.17g}", *v) : "");
        } else {
          row.push_back(tools::FormatValue(v, resp.unit()));
        }
        row.push_back(p.open() ? "open" : "");
        rows.push_back(std::move(row));
      }
    }
    std::vector<std::string> header{"TIME"};
    for (const auto& d : dims) header.push_back(d);
    header.push_back(resp.kpi());
    header.push_back("");
    PrintRows(o, header, rows);
    return kOk;
  }
  if (watch->parsed()) {
    v1::WatchKpisRequest req;
    for (const auto& k : kpis) {
      auto* q = req.add_queries();
      q->set_kpi(k);
      q->set_window(window);
      q->set_group_by(group_by);
      if (!AddFilters(filters, q->mutable_filter())) return kUsage;
    }
    return Watch(o, *stub, req);
  }
  if (alerts->parsed()) {
    v1::ListAlertsRequest req;
    for (const auto& s : states) {
      v1::AlertState st;
      if (!v1::AlertState_Parse("ALERT_STATE_" + std::string(s.begin(), s.end()), &st)) {
        std::string upper = s;
        for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (!v1::AlertState_Parse("ALERT_STATE_" + upper, &st)) {
          return Usage(fmt::format("--state {}: pending, firing or resolved", s));
        }
      }
      req.add_states(st);
    }
    req.set_severity(severity);
    if (!AddFilters(labels, req.mutable_labels())) return kUsage;
    v1::ListAlertsResponse resp;
    auto s = alert_stub->ListAlerts(Context(o).get(), req, &resp);
    if (!s.ok()) return Report(s);
    if (PrintStructured(o, resp)) return kOk;
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : resp.alerts()) {
      std::string lbl;
      for (const auto& [k, v] : a.labels()) {
        if (k != "alertname" && k != "severity") lbl += (lbl.empty() ? "" : ",") + k + "=" + v;
      }
      std::string state = v1::AlertState_Name(a.state()).substr(std::string("ALERT_STATE_").size());
      for (auto& c : state) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      rows.push_back({a.rule(), state, a.labels().count("severity") ? a.labels().at("severity") : "",
                      lbl.empty() ? "-" : lbl, a.has_value() ? fmt::format("{:.4g}", a.value()) : "-",
                      tools::FormatTime(a.active_since().seconds())});
    }
    PrintRows(o, {"RULE", "STATE", "SEVERITY", "LABELS", "VALUE", "ACTIVE SINCE"}, rows);
    return kOk;
  }
  if (rules->parsed()) {
    v1::ListRulesResponse resp;
    auto s = alert_stub->ListRules(Context(o).get(), v1::ListRulesRequest(), &resp);
    if (!s.ok()) return Report(s);
    if (PrintStructured(o, resp)) return kOk;
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : resp.rules()) {
      rows.push_back({r.name(), r.kpi().empty() ? "-" : r.kpi(), r.window().empty() ? "-" : r.window(), r.condition(),
                      tools::FormatValue(r.for_seconds(), "seconds"), r.severity(),
                      fmt::format("{}/{}", r.pending(), r.firing())});
    }
    PrintRows(o, {"RULE", "KPI", "WINDOW", "CONDITION", "FOR", "SEVERITY", "PENDING/FIRING"}, rows);
    return kOk;
  }
  if (health->parsed()) {
    auto hstub = grpc::health::v1::Health::NewStub(channel);
    auto status = [&](const std::string& service, grpc::health::v1::HealthCheckResponse* r) {
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(service);
      return hstub->Check(Context(o).get(), req, r);
    };
    grpc::health::v1::HealthCheckResponse reads, ingest;
    auto s = status("", &reads);
    if (!s.ok()) return Report(s);
    const bool serving = reads.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    const bool ingesting =
        status("kpistream.ingest", &ingest).ok() && ingest.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (o.output == "json") {
      fmt::print("{{\"reads\": \"{}\", \"ingestion\": \"{}\"}}\n", serving ? "SERVING" : "NOT_SERVING",
                 ingesting ? "SERVING" : "NOT_SERVING");
    } else {
      fmt::print("{}\n", serving ? (ingesting ? "SERVING" : "SERVING (reads; ingestion NOT_SERVING)") : "NOT_SERVING");
    }
    return serving ? kOk : kError;
  }
  return kOk;
}
