// Delivers alerts to Alertmanager (v2 API, POST /api/v2/alerts) and to
// optional generic webhooks (the body Alertmanager's own webhook receivers
// get, so they parse it unchanged), the way Prometheus does:
// every firing alert is re-sent each resend interval with endsAt ahead of
// now (so Alertmanager keeps it alive only while kpid keeps saying so), a
// resolved alert is sent with endsAt = its resolution time until every
// target has taken it, and a transition is sent at once. Every URL of an HA
// pair gets every alert; a failing URL is retried with exponential backoff.
//
// Thread-safety: Start/Stop from one thread; stats() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "alerting/alerter.h"

namespace kpistream::alerting {

// How kpid authenticates to an alert target: the part of Prometheus'
// `http_config` (its configuration reference) that alert delivery needs.
// Files are re-read at every request, so a rotated secret is used at once.
struct HttpClientConfig {
  // `Authorization: <type> <credentials>` (credentials or credentials_file).
  std::string authorization_type = "Bearer";
  std::string credentials, credentials_file;
  // HTTP basic authentication (password or password_file).
  std::string basic_username, basic_password, basic_password_file;
  // Extra request headers (not Authorization or Content-Type).
  std::vector<std::pair<std::string, std::string>> headers;
  // TLS: CAs to trust (PEM; default: the system's), a client certificate
  // and its key, and whether to skip verifying the server (tests only).
  std::string ca_file, cert_file, key_file;
  bool insecure_skip_verify = false;
};

struct AlertTarget {
  std::string url;
  HttpClientConfig http;
};

struct NotifierOptions {
  // Alertmanagers by base URL, e.g. http://am-1:9093 (the API path is added).
  std::vector<AlertTarget> alertmanagers;
  // Generic webhooks: the URL as given, the body Alertmanager's webhook
  // format (WebhookPayload).
  std::vector<AlertTarget> webhooks;
  // The webhook body's `receiver`.
  std::string receiver = "kpid";
  int64_t resend_interval_ms = 60000;
  // Firing alerts are sent with endsAt = now + this (Prometheus: 4 x the
  // larger of the resend and evaluation intervals).
  int64_t ends_at_ahead_ms = 4 * 60000;
  int64_t timeout_ms = 10000;
  int64_t min_backoff_ms = 500;
  int64_t max_backoff_ms = 30000;
  // Link back to kpid in each alert (generatorURL); optional.
  std::string generator_url;
  // Replicas: only the alert leader sends (services/alert_leader.h); null:
  // always. A new leader sends every firing alert at once, with its
  // original startsAt and labels: Alertmanager takes it as the alert it
  // already has, and notifies nobody again.
  std::function<bool()> active;
};

struct NotifierTargetStats {
  std::string url;
  uint64_t sent = 0;    // requests accepted (2xx)
  uint64_t failed = 0;  // requests refused or unreachable
  uint64_t alerts_sent = 0;
  bool up = true;  // the last request succeeded
};

class Notifier {
 public:
  // REQUIRES: alerter and clock outlive the notifier.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Notifier>> Start(
      const NotifierOptions& options, Alerter* alerter, const state::Clock& clock = state::Clock::Wall());
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  void Stop();  // idempotent
  std::vector<NotifierTargetStats> stats() const;

 private:
  struct Rep;
  explicit Notifier(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

// Alertmanager's JSON for a batch of alerts (exposed for tests): startsAt
// is the alert's firing time on the wall clock, fixed when it fired; endsAt
// its resolution time, or now + ends_at_ahead_ms while firing. Label and
// annotation bytes that are not UTF-8 are sent as U+FFFD.
std::string AlertmanagerPayload(const std::vector<Alert>& alerts, int64_t now_ms, int64_t ends_at_ahead_ms,
                                const std::string& generator_url);

// Alertmanager's webhook body (version "4"), as its webhook_configs POST:
// {version, groupKey "{}:{}" (kpid sends every alert in one group),
// truncatedAlerts 0, status "firing" if any alert fires else "resolved",
// receiver, groupLabels {}, commonLabels and commonAnnotations (the pairs
// every alert shares), externalURL (generator_url), alerts: [{status,
// labels, annotations, startsAt, endsAt, generatorURL, fingerprint}]}.
// Times as in AlertmanagerPayload; a resolved alert's endsAt is its
// resolution time, a firing one's "0001-01-01T00:00:00Z" as Alertmanager
// sends it.
std::string WebhookPayload(const std::vector<Alert>& alerts, const std::string& receiver,
                           const std::string& generator_url);

}  // namespace kpistream::alerting
