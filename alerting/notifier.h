// Delivers alerts to Alertmanager (v2 API, POST /api/v2/alerts) and to
// optional generic webhooks (the same JSON body), the way Prometheus does:
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
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "alerting/alerter.h"

namespace kpistream::alerting {

struct NotifierOptions {
  // Alertmanager base URLs, e.g. http://am-1:9093 (the API path is added).
  std::vector<std::string> alertmanager_urls;
  // Generic webhooks: the URL as given, the body Alertmanager's JSON.
  std::vector<std::string> webhook_urls;
  int64_t resend_interval_ms = 60000;
  // Firing alerts are sent with endsAt = now + this (Prometheus: 4 x the
  // larger of the resend and evaluation intervals).
  int64_t ends_at_ahead_ms = 4 * 60000;
  int64_t timeout_ms = 10000;
  int64_t min_backoff_ms = 500;
  int64_t max_backoff_ms = 30000;
  // Link back to kpid in each alert (generatorURL); optional.
  std::string generator_url;
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

}  // namespace kpistream::alerting
