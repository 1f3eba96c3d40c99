// kpictl: command-line client of kpid's gRPC API.
//   kpictl [--addr host:port] list
//   kpictl get KPI [--window 24h] [--group-by dim] [--filter dim=value ...] [--end unix_s]
//   kpictl range KPI --start unix_s --end unix_s --step 1m [--group-by dim]
//   kpictl health
//   kpictl validate FILE
//   kpictl dashboards --catalog FILE --out DIR [--check]   Grafana dashboards + provisioning
//   kpictl rules --catalog FILE --out FILE [--check]       Prometheus recording and alerting rules
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kpi/catalog.h"
#include "kpistream/v1/kpi.grpc.pb.h"
#include "tools/kpictl/generate.h"

namespace v1 = kpistream::v1;
using google::protobuf::util::TimeUtil;

namespace {

int Report(const grpc::Status& s) {
  fmt::print(stderr, "kpictl: {} ({})\n", s.error_message(), static_cast<int>(s.error_code()));
  return s.error_code() == grpc::StatusCode::INVALID_ARGUMENT || s.error_code() == grpc::StatusCode::NOT_FOUND ? 2 : 1;
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& m) {
  std::vector<std::pair<std::string, std::string>> v(m.begin(), m.end());
  std::sort(v.begin(), v.end());
  std::string out;
  for (const auto& [k, val] : v) out += fmt::format("{}{}={}", out.empty() ? "" : ",", k, val);
  return out.empty() ? "-" : out;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &s, o);
  fmt::print("{}", s);
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
  return differing == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kpictl: query kpid"};
  app.require_subcommand(1);
  std::string addr = "127.0.0.1:50051";
  bool json = false;
  double timeout_s = 10;
  app.add_option("--addr", addr, "kpid gRPC address")->capture_default_str();
  app.add_flag("--json", json, "print responses as JSON");
  app.add_option("--timeout", timeout_s, "deadline in seconds")->capture_default_str();

  auto* list = app.add_subcommand("list", "list the KPI catalog");
  std::string kpi, window, group_by, step, file;
  std::vector<std::string> filters;
  int64_t start = -1, end = -1;
  auto* get = app.add_subcommand("get", "current value of a KPI");
  get->add_option("kpi", kpi)->required();
  get->add_option("--window", window, "e.g. 5m, 24h, 30d, all (default: the KPI's first window)");
  get->add_option("--group-by", group_by);
  get->add_option("--filter", filters, "dim=value (repeatable)");
  get->add_option("--end", end, "window end, unix seconds (default: now)");
  auto* range = app.add_subcommand("range", "KPI history at a step");
  range->add_option("kpi", kpi)->required();
  range->add_option("--start", start, "unix seconds")->required();
  range->add_option("--end", end, "unix seconds")->required();
  range->add_option("--step", step, "e.g. 1m, 1h")->required();
  range->add_option("--group-by", group_by);
  range->add_option("--filter", filters, "dim=value (repeatable)");
  auto* health = app.add_subcommand("health", "gRPC health of kpid");
  auto* validate = app.add_subcommand("validate", "validate a KPI file");
  validate->add_option("file", file)->required();
  std::string catalog_file, out;
  bool check = false;
  auto* dashboards = app.add_subcommand(
      "dashboards", "Grafana dashboards (one per `dashboards:` name, plus operations) and provisioning files");
  dashboards->add_option("--catalog", catalog_file, "the KPI file")->required();
  dashboards->add_option("--out", out, "directory (dashboards in OUT/dashboards, provisioning in OUT/provisioning)")
      ->required();
  dashboards->add_flag("--check", check, "compare with what is in OUT instead of writing; exit 1 if they differ");
  auto* rules = app.add_subcommand("rules", "Prometheus recording and alerting rules for the KPI file");
  rules->add_option("--catalog", catalog_file, "the KPI file")->required();
  rules->add_option("--out", out, "the rule file to write")->required();
  rules->add_flag("--check", check, "compare with OUT instead of writing; exit 1 if they differ");
  CLI11_PARSE(app, argc, argv);

  if (dashboards->parsed() || rules->parsed()) {
    auto cat = kpistream::kpi::LoadCatalogFile(catalog_file);
    if (!cat.ok()) {
      fmt::print(stderr, "{}\n", std::string(cat.status().message()));
      return 1;
    }
    if (rules->parsed()) {
      const std::filesystem::path p(out);
      return WriteOrCheck(p.parent_path().empty() ? "." : p.parent_path(),
                          {{p.filename().string(), kpistream::tools::PrometheusRules(*cat)}}, check);
    }
    std::map<std::string, std::string> files;
    for (const auto& [name, text] : kpistream::tools::GrafanaDashboards(*cat)) {
      files["dashboards/" + name + ".json"] = text;
    }
    for (const auto& [name, text] : kpistream::tools::GrafanaProvisioning("/var/lib/grafana/dashboards/kpistream")) {
      files["provisioning/" + name] = text;
    }
    return WriteOrCheck(out, files, check);
  }

  if (validate->parsed()) {
    auto cat = kpistream::kpi::LoadCatalogFile(file);
    if (!cat.ok()) {
      fmt::print(stderr, "{}\n", std::string(cat.status().message()));
      return 1;
    }
    fmt::print("{}: OK ({} measures, {} KPIs)\n", file, cat->measures.size(), cat->kpis.size());
    return 0;
  }

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = v1::KpiService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  auto add_filters = [&](google::protobuf::Map<std::string, std::string>* m) -> bool {
    for (const auto& f : filters) {
      const auto eq = f.find('=');
      if (eq == std::string::npos) {
        fmt::print(stderr, "kpictl: --filter {}: expected dim=value\n", f);
        return false;
      }
      (*m)[f.substr(0, eq)] = f.substr(eq + 1);
    }
    return true;
  };

  if (list->parsed()) {
    v1::ListKpisResponse resp;
    auto s = stub->ListKpis(&ctx, v1::ListKpisRequest(), &resp);
    if (!s.ok()) return Report(s);
    if (json) {
      PrintJson(resp);
      return 0;
    }
    for (const auto& k : resp.kpis()) {
      std::string windows;
      for (const auto& w : k.windows()) windows += (windows.empty() ? "" : ",") + w;
      fmt::print("{:<24} {:<9} {:<14} {}  = {}\n", k.name(), k.unit(), windows, k.help(), k.formula());
    }
    return 0;
  }
  if (get->parsed()) {
    v1::GetKpiRequest req;
    req.set_kpi(kpi);
    req.set_window(window);
    req.set_group_by(group_by);
    if (end >= 0) *req.mutable_end_time() = TimeUtil::SecondsToTimestamp(end);
    if (!add_filters(req.mutable_filter())) return 2;
    v1::GetKpiResponse resp;
    auto s = stub->GetKpi(&ctx, req, &resp);
    if (!s.ok()) return Report(s);
    if (json) {
      PrintJson(resp);
      return 0;
    }
    for (const auto& v : resp.values()) {
      fmt::print("{} {} {} {}\n", resp.kpi(), resp.window(), Labels(v.group()),
                 v.has_value() ? fmt::format("{:.17g}", v.value()) : "none");
    }
    return 0;
  }
  if (range->parsed()) {
    v1::QueryRangeRequest req;
    req.set_kpi(kpi);
    *req.mutable_start_time() = TimeUtil::SecondsToTimestamp(start);
    *req.mutable_end_time() = TimeUtil::SecondsToTimestamp(end);
    req.set_step(step);
    req.set_group_by(group_by);
    if (!add_filters(req.mutable_filter())) return 2;
    v1::QueryRangeResponse resp;
    auto s = stub->QueryRange(&ctx, req, &resp);
    if (!s.ok()) return Report(s);
    if (json) {
      PrintJson(resp);
      return 0;
    }
    for (const auto& series : resp.series()) {
      for (const auto& p : series.points()) {
        fmt::print("{} {} {}\n", Labels(series.group()), p.time().seconds(),
                   p.has_value() ? fmt::format("{:.17g}", p.value()) : "none");
      }
    }
    return 0;
  }
  if (health->parsed()) {
    auto hstub = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckResponse resp;
    auto s = hstub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
    if (!s.ok()) return Report(s);
    fmt::print("{}\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()));
    return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  return 0;
}
