// What kpictl generates from a KPI file, so that dashboards and rules
// follow the catalog (a new or changed KPI gets matching panels and rules):
//
//   GrafanaDashboards: one dashboard per name the KPIs list in
//     `dashboards:` (executive, marketing, product, sales, ...) and one for
//     operating kpid, in Grafana's dashboard JSON model (schemaVersion 39,
//     https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/):
//     a stat tile per KPI with the target's bands as thresholds, a trend per
//     KPI, a bar gauge per exported breakdown, the catalog's `funnels:`, and
//     a table per dashboard of the KPIs exported by signup_cohort (cohort
//     retention). Template variables: the data source, the window, and each
//     exported dimension.
//   GrafanaProvisioning: the provisioning files that load them.
//   PrometheusRules: a Prometheus rule file (prometheus.io/docs rules
//     format): recording rules that re-aggregate each exported ratio from
//     its parts, and alerting rules mirroring the catalog's alert rules for
//     teams who alert in Prometheus (what PromQL cannot express is listed
//     as a comment, with why).
//
// Every PromQL expression uses only the series kpid exports for that
// catalog (kpi/prometheus_names.h). Thread-safety: pure functions.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kpi/catalog.h"

namespace kpistream::tools {

// Dashboard file name (without .json) -> the dashboard's JSON text.
std::map<std::string, std::string> GrafanaDashboards(const kpi::Catalog& catalog);

// Provisioning file name (e.g. "dashboards.yaml") -> text, for a Grafana
// that mounts the dashboards at `dashboards_path`.
std::map<std::string, std::string> GrafanaProvisioning(const std::string& dashboards_path);

// The rule file's text.
std::string PrometheusRules(const kpi::Catalog& catalog);

// Every PromQL expression of a dashboard's JSON text (targets' "expr" and
// template variables' queries), for tests that run them.
std::vector<std::string> DashboardExpressions(const std::string& dashboard_json);

}  // namespace kpistream::tools
