#include "alerting/notifier.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "absl/time/time.h"

namespace kpistream::alerting {

namespace {

std::string Rfc3339(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

// A resolution is identified by the instance and when it resolved, so a new
// episode of the same alert is delivered again.
std::string ResolutionId(const Alert& a) { return fmt::format("{}@{}", a.fingerprint, a.resolved_at_ms); }

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

}  // namespace

std::string AlertmanagerPayload(const std::vector<Alert>& alerts, int64_t now_ms, int64_t ends_at_ahead_ms,
                                const std::string& generator_url) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& a : alerts) {
    nlohmann::json j;
    j["labels"] = nlohmann::json::object();
    for (const auto& [k, v] : a.labels) j["labels"][k] = v;
    j["annotations"] = nlohmann::json::object();
    for (const auto& [k, v] : a.annotations) j["annotations"][k] = v;
    j["startsAt"] = Rfc3339(a.starts_at_ms);
    if (a.state == AlertState::kResolved) {
      j["endsAt"] = Rfc3339(a.ends_at_ms);
    } else {
      j["endsAt"] = Rfc3339(now_ms + ends_at_ahead_ms);
    }
    if (!generator_url.empty()) j["generatorURL"] = generator_url;
    arr.push_back(std::move(j));
  }
  // A dimension value may hold bytes that are not UTF-8: JSON cannot, so
  // they go out as U+FFFD (the alert's identity, kept in kpid, is the bytes).
  return arr.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Notifier::Rep {
  NotifierOptions options;
  Alerter* alerter;
  const state::Clock* clock;
  int sub_id = -1;

  struct Target {
    std::string url;
    int64_t next_attempt_ms = 0;
    int64_t backoff_ms = 0;
    int64_t last_success_ms = 0;
    uint64_t sent_sequence = UINT64_MAX;  // alerter sequence of the last successful send
    std::set<std::string> acked;          // resolutions this target took
  };
  std::vector<Target> targets;  // owned by the thread

  mutable std::mutex stats_mu;
  std::vector<NotifierTargetStats> stats ABSL_GUARDED_BY(stats_mu);

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;  // guarded by mu
  bool wake = false;  // guarded by mu
  std::thread thread;

  void Run();
  bool Post(const std::string& url, const std::string& body, std::string* error) const;
};

bool Notifier::Rep::Post(const std::string& url, const std::string& body, std::string* error) const {
  CURL* c = curl_easy_init();
  if (!c) {
    *error = "curl_easy_init failed";
    return false;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout_ms));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Discard);
  const CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) {
    *error = curl_easy_strerror(rc);
    return false;
  }
  if (code < 200 || code >= 300) {
    *error = fmt::format("HTTP {}", code);
    return false;
  }
  return true;
}

void Notifier::Rep::Run() {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait_for(lk, std::chrono::milliseconds(200), [this] { return stop || wake; });
      if (stop) return;
      wake = false;
    }
    const int64_t now = clock->NowMs();
    const uint64_t seq = alerter->sequence();
    std::vector<Alert> records;
    bool fetched = false;
    for (size_t i = 0; i < targets.size(); ++i) {
      auto& t = targets[i];
      if (now < t.next_attempt_ms) continue;
      const bool due = t.sent_sequence != seq || now - t.last_success_ms >= options.resend_interval_ms;
      if (!due) continue;
      if (!fetched) {
        records = alerter->Alerts();
        fetched = true;
      }
      std::vector<Alert> batch;
      for (const auto& r : records) {
        const auto s = r.state;
        if (s == AlertState::kFiring ||
            (s == AlertState::kResolved && !r.resolution_delivered && !t.acked.count(ResolutionId(r)))) {
          batch.push_back(r);
        }
      }
      std::string error;
      const bool ok =
          batch.empty() ||
          Post(t.url, AlertmanagerPayload(batch, now, options.ends_at_ahead_ms, options.generator_url), &error);
      {
        std::lock_guard<std::mutex> l(stats_mu);
        auto& st = stats[i];
        if (!batch.empty()) (ok ? st.sent : st.failed)++;
        if (ok) st.alerts_sent += batch.size();
        st.up = ok;
      }
      if (ok) {
        t.sent_sequence = seq;
        t.last_success_ms = now;
        t.backoff_ms = 0;
        for (const auto& r : batch) {
          if (r.state == AlertState::kResolved) t.acked.insert(ResolutionId(r));
        }
      } else {
        t.backoff_ms = std::clamp(t.backoff_ms * 2, options.min_backoff_ms, options.max_backoff_ms);
        t.next_attempt_ms = now + t.backoff_ms;
        spdlog::warn("alerts: sending {} alert(s) to {} failed ({}); retrying in {} ms", batch.size(), t.url, error,
                     t.backoff_ms);
      }
    }
    if (!fetched) continue;
    // Resolutions every target took are done; forget acks of alerts gone.
    std::vector<std::string> delivered;
    std::set<std::string> live;
    for (const auto& r : records) {
      if (r.state != AlertState::kResolved || r.resolution_delivered) continue;
      const auto id = ResolutionId(r);
      live.insert(id);
      if (std::all_of(targets.begin(), targets.end(), [&](const Target& t) { return t.acked.count(id) > 0; })) {
        delivered.push_back(r.fingerprint);
      }
    }
    for (auto& t : targets) {
      for (auto it = t.acked.begin(); it != t.acked.end();) it = live.count(*it) ? std::next(it) : t.acked.erase(it);
    }
    if (!delivered.empty()) alerter->MarkResolutionDelivered(delivered);
  }
}

absl::StatusOr<std::unique_ptr<Notifier>> Notifier::Start(const NotifierOptions& options, Alerter* alerter,
                                                          const state::Clock& clock) {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK) return absl::InternalError("curl_global_init failed");
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  rep->alerter = alerter;
  rep->clock = &clock;
  for (auto url : options.alertmanager_urls) {
    while (!url.empty() && url.back() == '/') url.pop_back();
    rep->targets.push_back({.url = url + "/api/v2/alerts"});
  }
  for (const auto& url : options.webhook_urls) rep->targets.push_back({.url = url});
  for (const auto& t : rep->targets) {
    if (!t.url.starts_with("http://") && !t.url.starts_with("https://")) {
      return absl::InvalidArgumentError(fmt::format("alert target '{}' must be an http:// or https:// URL", t.url));
    }
  }
  {
    std::lock_guard<std::mutex> l(rep->stats_mu);
    for (const auto& t : rep->targets) rep->stats.push_back({.url = t.url});
  }
  auto* r = rep.get();
  rep->sub_id = alerter->Subscribe([r] {
    {
      std::lock_guard<std::mutex> lk(r->mu);
      r->wake = true;
    }
    r->cv.notify_all();
  });
  rep->thread = std::thread([r] { r->Run(); });
  return std::unique_ptr<Notifier>(new Notifier(std::move(rep)));
}

Notifier::Notifier(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Notifier::~Notifier() { Stop(); }

void Notifier::Stop() {
  if (rep_->sub_id >= 0) {
    rep_->alerter->Unsubscribe(rep_->sub_id);
    rep_->sub_id = -1;
  }
  {
    std::lock_guard<std::mutex> lk(rep_->mu);
    rep_->stop = true;
  }
  rep_->cv.notify_all();
  if (rep_->thread.joinable()) rep_->thread.join();
}

std::vector<NotifierTargetStats> Notifier::stats() const {
  std::lock_guard<std::mutex> l(rep_->stats_mu);
  return rep_->stats;
}

}  // namespace kpistream::alerting
