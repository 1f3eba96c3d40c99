#include "services/metrics.h"
#include "services/utf8.h"

namespace kpistream::services {

namespace prom = prometheus;

// Prometheus' own alert series, so dashboards and rules treat kpid's
// alerts like any other: ALERTS{alertname, alertstate, ...labels} 1 and
// ALERTS_FOR_STATE (the time the instance became active, in seconds).
void CollectAlerting(const alerting::Alerter& alerter, const alerting::Notifier* notifier, MetricFamilies* out,
                     std::optional<bool> leading) {
  const auto G = prom::MetricType::Gauge;
  const auto C = prom::MetricType::Counter;
  if (leading) {
    auto f = Family("kpistream_alert_leader",
                    "1 on the replica that evaluates the alert rules and sends the alerts (replicas elect one).", G);
    f.metric.push_back(Sample(*leading ? 1 : 0, G));
    out->push_back(std::move(f));
  }
  auto alerts = Family("ALERTS", "Pending and firing kpistream alerts.", G);
  auto for_state = Family("ALERTS_FOR_STATE", "When each pending or firing alert became active (Unix seconds).", G);
  // With replicas only the leader exports them, so that PromQL counts each
  // alert once (the others hold the same alerts, replicated).
  for (const auto& a : leading.value_or(true) ? alerter.Alerts() : std::vector<alerting::Alert>{}) {
    const bool firing = a.state == alerting::AlertState::kFiring;
    if (!firing && a.state != alerting::AlertState::kPending) continue;
    // The exposition is UTF-8: invalid bytes of a dimension value show as
    // U+FFFD (the alert's identity in kpid is the bytes).
    std::vector<prom::ClientMetric::Label> labels;
    for (const auto& [k, v] : a.labels) labels.push_back({k, ValidUtf8(v)});
    for_state.metric.push_back(Sample(static_cast<double>(a.active_since_ms / 1000), G, labels));
    labels.push_back({"alertstate", firing ? "firing" : "pending"});
    alerts.metric.push_back(Sample(1, G, std::move(labels)));
  }
  out->push_back(std::move(alerts));
  out->push_back(std::move(for_state));
  const auto st = alerter.stats();
  auto evals = Family("kpistream_alert_evaluations_total", "Alert evaluation rounds.", C);
  evals.metric.push_back(Sample(static_cast<double>(st.evaluations), C));
  out->push_back(std::move(evals));
  auto fails = Family("kpistream_alert_evaluation_failures_total",
                      "Rule evaluations that failed (the instances kept their state).", C);
  fails.metric.push_back(Sample(static_cast<double>(st.evaluation_failures), C));
  out->push_back(std::move(fails));
  auto persist = Family("kpistream_alert_persist_failures_total", "Alert state writes that failed.", C);
  persist.metric.push_back(Sample(static_cast<double>(st.persist_failures), C));
  out->push_back(std::move(persist));
  auto gaps = Family("kpistream_alert_gaps_total",
                     "Gaps in rule evaluation (kpid down or replaying, a jump of the event-time clock), by how "
                     "they were handled: sampled (a KPI rule's condition evaluated across the gap) or unknown (an "
                     "age rule's instance: the gap counted neither as held nor as cleared).",
                     C);
  gaps.metric.push_back(Sample(static_cast<double>(st.gaps_sampled), C, {{"handling", "sampled"}}));
  gaps.metric.push_back(Sample(static_cast<double>(st.gaps), C, {{"handling", "unknown"}}));
  out->push_back(std::move(gaps));
  auto duration =
      Family("kpistream_alert_evaluation_duration_seconds", "How long the last evaluation of every rule took.", G);
  duration.metric.push_back(Sample(st.last_duration_s, G));
  out->push_back(std::move(duration));
  if (!notifier) return;
  auto sent =
      Family("kpistream_alert_notifications_total", "Requests to Alertmanager and webhooks, by target and result.", C);
  auto up = Family("kpistream_alert_target_up", "1 when the last request to the target succeeded.", G);
  auto alerts_sent = Family("kpistream_alerts_sent_total", "Alerts sent, by target.", C);
  for (const auto& t : notifier->stats()) {
    sent.metric.push_back(Sample(static_cast<double>(t.sent), C, {{"result", "ok"}, {"target", t.url}}));
    sent.metric.push_back(Sample(static_cast<double>(t.failed), C, {{"result", "failed"}, {"target", t.url}}));
    up.metric.push_back(Sample(t.up ? 1 : 0, G, {{"target", t.url}}));
    alerts_sent.metric.push_back(Sample(static_cast<double>(t.alerts_sent), C, {{"target", t.url}}));
  }
  out->push_back(std::move(sent));
  out->push_back(std::move(up));
  out->push_back(std::move(alerts_sent));
}

}  // namespace kpistream::services
