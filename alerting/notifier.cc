#include "alerting/notifier.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
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

std::string WebhookPayload(const std::vector<Alert>& alerts, const std::string& receiver,
                           const std::string& generator_url) {
  using nlohmann::json;
  json out_alerts = json::array();
  bool firing = false;
  std::optional<std::map<std::string, std::string>> common_labels, common_annotations;
  auto intersect = [](std::optional<std::map<std::string, std::string>>* common,
                      const std::map<std::string, std::string>& kv) {
    if (!*common) {
      *common = kv;
      return;
    }
    std::erase_if(**common, [&](const auto& p) {
      const auto it = kv.find(p.first);
      return it == kv.end() || it->second != p.second;
    });
  };
  for (const auto& a : alerts) {
    const bool resolved = a.state == AlertState::kResolved;
    firing |= !resolved;
    json j;
    j["status"] = resolved ? "resolved" : "firing";
    j["labels"] = json::object();
    for (const auto& [k, v] : a.labels) j["labels"][k] = v;
    j["annotations"] = json::object();
    for (const auto& [k, v] : a.annotations) j["annotations"][k] = v;
    j["startsAt"] = Rfc3339(a.starts_at_ms);
    j["endsAt"] = resolved ? Rfc3339(a.ends_at_ms) : "0001-01-01T00:00:00Z";
    j["generatorURL"] = generator_url;
    j["fingerprint"] = a.fingerprint;
    out_alerts.push_back(std::move(j));
    intersect(&common_labels, {a.labels.begin(), a.labels.end()});
    intersect(&common_annotations, {a.annotations.begin(), a.annotations.end()});
  }
  json body;
  body["version"] = "4";
  body["groupKey"] = "{}:{}";
  body["truncatedAlerts"] = 0;
  body["status"] = firing ? "firing" : "resolved";
  body["receiver"] = receiver;
  body["groupLabels"] = json::object();
  body["commonLabels"] = json::object();
  for (const auto& [k, v] : common_labels.value_or(std::map<std::string, std::string>{})) body["commonLabels"][k] = v;
  body["commonAnnotations"] = json::object();
  for (const auto& [k, v] : common_annotations.value_or(std::map<std::string, std::string>{})) {
    body["commonAnnotations"][k] = v;
  }
  body["externalURL"] = generator_url;
  body["alerts"] = std::move(out_alerts);
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Notifier::Rep {
  NotifierOptions options;
  Alerter* alerter;
  const state::Clock* clock;
  int sub_id = -1;

  struct Target {
    std::string url;
    bool webhook = false;
    HttpClientConfig http;
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
  bool Post(const Target& target, const std::string& body, std::string* error) const;
};

namespace {

// A secret from the config or, re-read now, from its file (trailing
// newlines dropped, as Prometheus does).
bool Secret(const std::string& value, const std::string& file, std::string* out, std::string* error) {
  if (file.empty()) {
    *out = value;
    return true;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    *error = fmt::format("cannot read {}", file);
    return false;
  }
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  while (!out->empty() && (out->back() == '\n' || out->back() == '\r')) out->pop_back();
  return true;
}

// The request's credentials, headers and TLS settings from `http`.
bool ApplyHttpConfig(CURL* c, const HttpClientConfig& http, curl_slist** headers, std::string* user,
                     std::string* password, std::string* error) {
  std::string credentials;
  if (!Secret(http.credentials, http.credentials_file, &credentials, error)) return false;
  if (!credentials.empty()) {
    *headers =
        curl_slist_append(*headers, fmt::format("Authorization: {} {}", http.authorization_type, credentials).c_str());
  }
  if (!http.basic_username.empty()) {
    *user = http.basic_username;
    if (!Secret(http.basic_password, http.basic_password_file, password, error)) return false;
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, user->c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, password->c_str());
  }
  for (const auto& [k, v] : http.headers) *headers = curl_slist_append(*headers, fmt::format("{}: {}", k, v).c_str());
  if (!http.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, http.ca_file.c_str());
  if (!http.cert_file.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, http.cert_file.c_str());
  if (!http.key_file.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, http.key_file.c_str());
  if (http.insecure_skip_verify) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return true;
}

}  // namespace

bool Notifier::Rep::Post(const Target& target, const std::string& body, std::string* error) const {
  CURL* c = curl_easy_init();
  if (!c) {
    *error = "curl_easy_init failed";
    return false;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  std::string user, password;  // alive until the request is done
  if (!ApplyHttpConfig(c, target.http, &headers, &user, &password, error)) {
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return false;
  }
  curl_easy_setopt(c, CURLOPT_URL, target.url.c_str());
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
    if (options.active && !options.active()) continue;
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
      const bool ok = batch.empty() ||
                      Post(t,
                           t.webhook ? WebhookPayload(batch, options.receiver, options.generator_url)
                                     : AlertmanagerPayload(batch, now, options.ends_at_ahead_ms, options.generator_url),
                           &error);
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
  for (const auto& am : options.alertmanagers) {
    std::string url = am.url;
    while (!url.empty() && url.back() == '/') url.pop_back();
    rep->targets.push_back({.url = url + "/api/v2/alerts", .http = am.http});
  }
  for (const auto& w : options.webhooks) rep->targets.push_back({.url = w.url, .webhook = true, .http = w.http});
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
