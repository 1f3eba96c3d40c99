#include "services/alerter.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <set>

namespace kpistream::services {

namespace {

using alerting::AlertInstance;
using alerting::AlertState;
using kpi::AlertKind;
using kpi::AlertRule;
using LabelMap = std::map<std::string, std::string>;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SetTime(google::protobuf::Timestamp* t, int64_t ms) {
  t->set_seconds(ms / 1000);
  t->set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
}
int64_t TimeMs(const google::protobuf::Timestamp& t) { return t.seconds() * 1000 + t.nanos() / 1000000; }

// Keys in the store's alerts keyspace.
constexpr std::string_view kInstancePrefix = "i/";
constexpr std::string_view kTransitionPrefix = "t/";

std::string InstanceKey(const std::string& rule, const LabelMap& group) {
  std::string k = fmt::format("{}{}", kInstancePrefix, rule);
  for (const auto& [d, v] : group) {
    k.push_back('\0');
    k += d;
    k.push_back('=');
    k += v;
  }
  return k;
}

std::string TransitionKey(uint64_t seq) {
  std::string k(kTransitionPrefix);
  for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>((seq >> (i * 8)) & 0xff));
  return k;
}

// Threshold shown as $threshold for a rule.
std::optional<double> RuleThreshold(const AlertRule& r, const kpi::KpiDef* kpi) {
  switch (r.kind) {
    case AlertKind::kThreshold:
      if (r.target_band && kpi && kpi->target) {
        const auto& t = *kpi->target;
        if (*r.target_band == kpi::Band::kWarning) return t.good ? t.good : t.warning;
        return t.critical ? t.critical : t.warning;
      }
      return r.threshold;
    case AlertKind::kChange:
      return r.threshold * 100;
    case AlertKind::kAnomaly:
      return r.k;
    case AlertKind::kAbsence:
    case AlertKind::kFreshness:
      return static_cast<double>(r.max_age_s);
  }
  return std::nullopt;
}

v1::AlertState ToProto(AlertState s) { return static_cast<v1::AlertState>(static_cast<int>(s)); }

}  // namespace

struct Alerter::Rep {
  AlerterOptions options;
  const kpi::Catalog& catalog;
  state::Store* store;
  AlertSources sources;
  const query::QueryService& query;
  int64_t started_ms = WallMs();

  struct Instance {
    const AlertRule* rule = nullptr;
    LabelMap group;  // the group's dimensions (and filter dimensions)
    AlertInstance inst;
    v1::AlertRecord record;  // as persisted and served
  };

  mutable std::mutex mu;
  std::map<std::string, Instance> instances ABSL_GUARDED_BY(mu);
  std::deque<v1::AlertTransition> log ABSL_GUARDED_BY(mu);
  uint64_t seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t oldest_kept ABSL_GUARDED_BY(mu) = 1;  // sequence of log.front()
  int64_t last_eval_now_ms ABSL_GUARDED_BY(mu) = 0;
  AlerterStats stats ABSL_GUARDED_BY(mu);

  std::mutex eval_mu;  // one evaluation at a time

  std::mutex subs_mu;
  std::map<int, std::function<void()>> subs ABSL_GUARDED_BY(subs_mu);
  int next_sub ABSL_GUARDED_BY(subs_mu) = 0;

  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool stop = false;  // guarded by wake_mu
  std::thread thread;
  Alerter* owner = nullptr;

  Rep(const AlerterOptions& o, const kpi::Catalog& c, const query::QueryService& q, state::Store* s, AlertSources src)
      : options(o), catalog(c), store(s), sources(std::move(src)), query(q) {}

  absl::Status Load();
  void Run();
  // Evaluates one rule: (group labels, condition) per group, or an error.
  absl::StatusOr<std::vector<std::pair<LabelMap, alerting::ConditionResult>>> Evaluate(const AlertRule& r,
                                                                                       int64_t now_ms);
  absl::StatusOr<std::vector<query::GroupValue>> Query(const AlertRule& r, int64_t end_s);
  void Refresh(Instance* in) const;
};

absl::Status Alerter::Rep::Load() {
  std::lock_guard<std::mutex> l(mu);
  std::map<std::string, const AlertRule*> rules;
  for (const auto& r : catalog.alerts) rules[r.name] = &r;
  std::vector<state::Store::AlertWrite> drop;
  auto st = store->ScanAlerts(kInstancePrefix, [&](std::string_view key, std::string_view value) {
    v1::AlertRecord rec;
    if (!rec.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      spdlog::error("alert state {}: unreadable record, dropped", std::string(key));
      drop.emplace_back(std::string(key), std::nullopt);
      return;
    }
    auto rule = rules.find(rec.alert().rule());
    if (rule == rules.end()) {
      spdlog::info("alert {}: the rule is gone from the catalog; its state is dropped", rec.alert().rule());
      drop.emplace_back(std::string(key), std::nullopt);
      return;
    }
    Instance in;
    in.rule = rule->second;
    in.record = rec;
    const auto& a = rec.alert();
    in.inst.state = static_cast<AlertState>(a.state());
    if (a.has_value()) in.inst.value = a.value();
    in.inst.active_since_ms = TimeMs(a.active_since());
    in.inst.firing_since_ms = TimeMs(a.firing_since());
    in.inst.resolved_at_ms = TimeMs(a.resolved_at());
    in.inst.last_true_ms = TimeMs(a.last_true());
    in.inst.last_evaluated_ms = TimeMs(a.last_evaluated());
    last_eval_now_ms = std::max(last_eval_now_ms, in.inst.last_evaluated_ms);
    // The group part of the key: "\0dim=value" pairs after the rule name.
    const std::string k(key.substr(kInstancePrefix.size()));
    size_t pos = k.find('\0');
    while (pos != std::string::npos) {
      const size_t next = k.find('\0', pos + 1);
      const std::string kv = k.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) in.group[kv.substr(0, eq)] = kv.substr(eq + 1);
      pos = next;
    }
    instances.emplace(std::string(key), std::move(in));
  });
  if (!st.ok()) return st;
  st = store->ScanAlerts(kTransitionPrefix, [&](std::string_view, std::string_view value) {
    v1::AlertTransition t;
    if (t.ParseFromArray(value.data(), static_cast<int>(value.size()))) log.push_back(std::move(t));
  });
  if (!st.ok()) return st;
  if (!log.empty()) {
    oldest_kept = log.front().sequence();
    seq = log.back().sequence();
  }
  if (!drop.empty()) return store->WriteAlerts(drop);
  spdlog::info("alerts: {} rules, {} instances restored, transition sequence {}", catalog.alerts.size(),
               instances.size(), seq);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<query::GroupValue>> Alerter::Rep::Query(const AlertRule& r, int64_t end_s) {
  auto range = kpi::ResolveWindow(r.window, end_s, catalog.timezone);
  if (!range.ok()) return range.status();
  query::KpiQuery q;
  q.kpi = catalog.kpis[static_cast<size_t>(r.kpi)].name;
  q.start = range->start;
  q.end = range->end;
  if (!r.group_by.empty()) q.group_by = {r.group_by};
  q.filter = r.filter;
  std::sort(q.filter.begin(), q.filter.end());
  auto answer = query.Get(q);
  if (!answer.ok()) return answer.status();
  return std::move(answer->values);
}

absl::StatusOr<std::vector<std::pair<LabelMap, alerting::ConditionResult>>> Alerter::Rep::Evaluate(const AlertRule& r,
                                                                                                   int64_t now_ms) {
  std::vector<std::pair<LabelMap, alerting::ConditionResult>> out;
  LabelMap fixed;
  for (const auto& [d, v] : r.filter) fixed[d] = v;
  auto labels_of = [&](const query::Labels& group) {
    LabelMap m = fixed;
    for (const auto& [d, v] : group) m[d] = v;
    return m;
  };
  const int64_t now_s = (now_ms + 999) / 1000;
  switch (r.kind) {
    case AlertKind::kThreshold: {
      auto vals = Query(r, now_s);
      if (!vals.ok()) return vals.status();
      const auto& kpi = catalog.kpis[static_cast<size_t>(r.kpi)];
      for (const auto& g : *vals) out.emplace_back(labels_of(g.group), alerting::EvalThreshold(r, kpi, g.value));
      break;
    }
    case AlertKind::kChange: {
      auto now_vals = Query(r, now_s);
      if (!now_vals.ok()) return now_vals.status();
      auto before_vals = Query(r, now_s - r.compare_to_s);
      if (!before_vals.ok()) return before_vals.status();
      std::map<query::Labels, std::optional<double>> before;
      for (const auto& g : *before_vals) before[g.group] = g.value;
      for (const auto& g : *now_vals) {
        auto it = before.find(g.group);
        out.emplace_back(labels_of(g.group),
                         alerting::EvalChange(r, g.value, it == before.end() ? std::nullopt : it->second));
      }
      break;
    }
    case AlertKind::kAnomaly: {
      auto now_vals = Query(r, now_s);
      if (!now_vals.ok()) return now_vals.status();
      std::map<query::Labels, std::vector<double>> history;
      for (int i = 1; i <= r.periods; ++i) {
        auto past = Query(r, now_s - r.period_s * i);
        if (!past.ok()) return past.status();
        for (const auto& g : *past) {
          if (g.value) history[g.group].push_back(*g.value);
        }
      }
      for (const auto& g : *now_vals)
        out.emplace_back(labels_of(g.group), alerting::EvalAnomaly(r, g.value, history[g.group]));
      break;
    }
    case AlertKind::kAbsence:
    case AlertKind::kFreshness: {
      const int64_t newest = sources.newest_event_ms(r.kind == AlertKind::kAbsence ? r.family : std::nullopt);
      // Nothing ever applied: count from when kpid started.
      const int64_t since = newest > 0 ? newest : std::min(now_ms, started_ms);
      LabelMap m = fixed;
      if (r.family) m["family"] = std::string(kpi::kFamilyNames[static_cast<size_t>(*r.family)]);
      out.emplace_back(m, alerting::EvalAge(r, static_cast<double>(now_ms - since) / 1000.0));
      break;
    }
  }
  return out;
}

// Rebuilds the served record of an instance from its state.
void Alerter::Rep::Refresh(Instance* in) const {
  const AlertRule& r = *in->rule;
  const kpi::KpiDef* kpi = r.kpi >= 0 ? &catalog.kpis[static_cast<size_t>(r.kpi)] : nullptr;
  auto* a = in->record.mutable_alert();
  a->Clear();
  a->set_rule(r.name);
  LabelMap labels = in->group;
  for (const auto& [k, v] : r.labels) labels[k] = v;
  labels["alertname"] = r.name;
  labels["severity"] = r.severity;
  if (kpi) labels["kpi"] = kpi->name;
  for (const auto& [k, v] : labels) (*a->mutable_labels())[k] = v;
  kpi::TemplateData d;
  d.value = in->inst.value;
  if (r.kind == AlertKind::kChange && d.value) *d.value *= 100;
  d.threshold = RuleThreshold(r, kpi);
  d.kpi = kpi ? kpi->name : "";
  d.window = r.window;
  d.unit = kpi ? kpi->unit : "seconds";
  d.severity = r.severity;
  d.labels = labels;
  for (const auto& [k, text] : r.annotations) (*a->mutable_annotations())[k] = kpi::ExpandAlertTemplate(text, d);
  a->set_state(ToProto(in->inst.state));
  if (in->inst.value) a->set_value(*in->inst.value);
  SetTime(a->mutable_active_since(), in->inst.active_since_ms);
  if (in->inst.firing_since_ms) SetTime(a->mutable_firing_since(), in->inst.firing_since_ms);
  if (in->inst.resolved_at_ms) SetTime(a->mutable_resolved_at(), in->inst.resolved_at_ms);
  SetTime(a->mutable_last_true(), in->inst.last_true_ms);
  SetTime(a->mutable_last_evaluated(), in->inst.last_evaluated_ms);
  a->set_fingerprint(alerting::AlertFingerprint(labels));
}

absl::StatusOr<std::unique_ptr<Alerter>> Alerter::Create(const AlerterOptions& options, const kpi::Catalog& catalog,
                                                         const query::QueryService& queries, state::Store* store,
                                                         AlertSources sources) {
  auto rep = std::make_unique<Rep>(options, catalog, queries, store, std::move(sources));
  if (!rep->options.now_ms) rep->options.now_ms = WallMs;
  if (!rep->sources.ready) rep->sources.ready = [] { return true; };
  if (!rep->sources.newest_event_ms) rep->sources.newest_event_ms = [](auto) { return int64_t{0}; };
  if (auto st = rep->Load(); !st.ok()) return st;
  return std::unique_ptr<Alerter>(new Alerter(std::move(rep)));
}

Alerter::Alerter(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Alerter::~Alerter() { Stop(); }

absl::Status Alerter::EvaluateOnce() {
  std::lock_guard<std::mutex> eval_lock(rep_->eval_mu);
  const bool ready = rep_->sources.ready();
  const int64_t now = rep_->options.now_ms();
  // An event-time clock reads 0 until the first event arrives: nothing to
  // evaluate yet (and no window ends at the epoch).
  if (now <= 0) return absl::OkStatus();
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    // The event-time clock restarts at the committed watermark, which can
    // be behind the last evaluation: wait until it is past it.
    if (now < rep_->last_eval_now_ms) return absl::OkStatus();
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Evaluate outside the lock: queries read the store.
  struct RuleResult {
    const AlertRule* rule;
    absl::StatusOr<std::vector<std::pair<LabelMap, alerting::ConditionResult>>> groups;
  };
  std::vector<RuleResult> results;
  for (const auto& r : rep_->catalog.alerts) {
    // KPI rules wait for a fully loaded, caught-up state: a half-loaded view
    // must not resolve a firing alert. Age rules (absence, freshness) read
    // only the newest applied event times, and matter most exactly when the
    // engine is not ready (Kafka unreachable, commits failing).
    const bool age_rule = r.kind == AlertKind::kAbsence || r.kind == AlertKind::kFreshness;
    if (!ready && !age_rule) continue;
    results.push_back({&r, rep_->Evaluate(r, now)});
  }

  std::vector<state::Store::AlertWrite> writes;
  std::vector<v1::AlertTransition> transitions;
  bool notify = false;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    auto& instances = rep_->instances;
    auto step = [&](Rep::Instance* in, const alerting::ConditionResult& c) {
      const auto from = alerting::StepAlert(*in->rule, c.active, c.value, now, &in->inst);
      rep_->Refresh(in);
      if (from) {
        v1::AlertTransition t;
        t.set_sequence(++rep_->seq);
        t.set_from(ToProto(*from));
        *t.mutable_alert() = in->record.alert();
        if (in->inst.state == AlertState::kResolved) in->record.set_resolution_delivered(false);
        transitions.push_back(std::move(t));
      }
    };
    for (auto& rr : results) {
      const AlertRule& r = *rr.rule;
      if (!rr.groups.ok()) {
        ++rep_->stats.evaluation_failures;
        spdlog::warn("alert {}: evaluation failed: {}", r.name, rr.groups.status().ToString());
        continue;  // keep the instances as they are
      }
      std::set<std::string> seen;
      for (const auto& [group, cond] : *rr.groups) {
        const std::string key = InstanceKey(r.name, group);
        seen.insert(key);
        auto it = instances.find(key);
        if (it == instances.end()) {
          if (!cond.active) continue;  // nothing to track
          Rep::Instance in;
          in.rule = &r;
          in.group = group;
          it = instances.emplace(key, std::move(in)).first;
        }
        step(&it->second, cond);
      }
      // Groups that vanished from the result: their condition is false.
      const std::string prefix = fmt::format("{}{}", kInstancePrefix, r.name);
      for (auto it = instances.lower_bound(prefix); it != instances.end() && it->first.starts_with(prefix); ++it) {
        if (it->second.rule != &r || seen.count(it->first)) continue;
        if (it->first.size() > prefix.size() && it->first[prefix.size()] != '\0') continue;  // other rule
        step(&it->second, alerting::ConditionResult{});
      }
    }
    // Persist every instance, and drop the finished ones.
    for (auto it = instances.begin(); it != instances.end();) {
      auto& in = it->second;
      const bool gone = in.inst.state == AlertState::kInactive ||
                        (in.inst.state == AlertState::kResolved && in.record.resolution_delivered() &&
                         now - in.inst.resolved_at_ms >= rep_->options.resolved_retention_ms);
      if (gone) {
        writes.emplace_back(it->first, std::nullopt);
        it = instances.erase(it);
        continue;
      }
      writes.emplace_back(it->first, in.record.SerializeAsString());
      ++it;
    }
    for (const auto& t : transitions) {
      writes.emplace_back(TransitionKey(t.sequence()), t.SerializeAsString());
      rep_->log.push_back(t);
    }
    while (rep_->log.size() > rep_->options.max_transitions) {
      writes.emplace_back(TransitionKey(rep_->log.front().sequence()), std::nullopt);
      rep_->log.pop_front();
    }
    if (!rep_->log.empty()) rep_->oldest_kept = rep_->log.front().sequence();
    rep_->last_eval_now_ms = now;
    ++rep_->stats.evaluations;
    rep_->stats.last_duration_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    notify = !transitions.empty();
  }
  for (const auto& t : transitions) {
    spdlog::info("alert {} {}: {} -> {} (value {})", t.alert().rule(), t.alert().fingerprint(),
                 alerting::AlertStateName(static_cast<AlertState>(t.from())),
                 alerting::AlertStateName(static_cast<AlertState>(t.alert().state())),
                 t.alert().has_value() ? fmt::format("{}", t.alert().value()) : std::string("none"));
  }
  // Persist before anyone is told: a transition that was announced must
  // survive a crash.
  auto st = rep_->store->WriteAlerts(writes);
  if (!st.ok()) {
    std::lock_guard<std::mutex> l(rep_->mu);
    ++rep_->stats.persist_failures;
    return st;
  }
  if (notify) {
    std::lock_guard<std::mutex> l(rep_->subs_mu);
    for (auto& [id, fn] : rep_->subs) fn();
  }
  return absl::OkStatus();
}

void Alerter::Rep::Run() {
  uint64_t seen_changes = sources.change_counter ? sources.change_counter() : 0;
  auto last_eval = std::chrono::steady_clock::now() - std::chrono::hours(1);
  std::unique_lock<std::mutex> lk(wake_mu);
  while (!stop) {
    wake_cv.wait_for(lk, std::chrono::milliseconds(100));
    if (stop) break;
    const auto now = std::chrono::steady_clock::now();
    const uint64_t changes = sources.change_counter ? sources.change_counter() : seen_changes;
    const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_eval).count();
    const bool due = since >= options.eval_interval_ms || (changes != seen_changes && since >= options.min_eval_gap_ms);
    if (!due) continue;
    seen_changes = changes;
    last_eval = now;
    lk.unlock();
    // The Alerter object owns this Rep; EvaluateOnce is reached through it.
    if (auto st = owner->EvaluateOnce(); !st.ok()) spdlog::error("alert evaluation: {}", st.ToString());
    lk.lock();
  }
}

void Alerter::Start() {
  rep_->owner = this;
  rep_->thread = std::thread([this] { rep_->Run(); });
}

void Alerter::Stop() {
  {
    std::lock_guard<std::mutex> lk(rep_->wake_mu);
    rep_->stop = true;
  }
  rep_->wake_cv.notify_all();
  if (rep_->thread.joinable()) rep_->thread.join();
}

std::vector<v1::Alert> Alerter::Alerts() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  std::vector<v1::Alert> out;
  for (const auto& [k, in] : rep_->instances) out.push_back(in.record.alert());
  return out;
}

std::vector<v1::AlertRecord> Alerter::Records() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  std::vector<v1::AlertRecord> out;
  for (const auto& [k, in] : rep_->instances) out.push_back(in.record);
  return out;
}

uint64_t Alerter::sequence() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->seq;
}

bool Alerter::TransitionsAfter(uint64_t after, size_t max, std::vector<v1::AlertTransition>* out) const {
  std::lock_guard<std::mutex> l(rep_->mu);
  if (after + 1 < rep_->oldest_kept && after < rep_->seq) return false;
  for (const auto& t : rep_->log) {
    if (out->size() >= max) break;
    if (t.sequence() > after) out->push_back(t);
  }
  return true;
}

int Alerter::Subscribe(std::function<void()> fn) {
  std::lock_guard<std::mutex> l(rep_->subs_mu);
  const int id = rep_->next_sub++;
  rep_->subs.emplace(id, std::move(fn));
  return id;
}

void Alerter::Unsubscribe(int id) {
  std::lock_guard<std::mutex> l(rep_->subs_mu);
  rep_->subs.erase(id);
}

void Alerter::MarkResolutionDelivered(const std::vector<std::string>& fingerprints) {
  std::vector<state::Store::AlertWrite> writes;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    for (auto& [key, in] : rep_->instances) {
      if (in.inst.state != AlertState::kResolved || in.record.resolution_delivered()) continue;
      if (std::find(fingerprints.begin(), fingerprints.end(), in.record.alert().fingerprint()) == fingerprints.end()) {
        continue;
      }
      in.record.set_resolution_delivered(true);
      writes.emplace_back(key, in.record.SerializeAsString());
    }
  }
  if (writes.empty()) return;
  if (auto st = rep_->store->WriteAlerts(writes); !st.ok()) {
    // Not fatal: the resolution is sent again after a restart.
    spdlog::warn("alerts: recording delivered resolutions: {}", st.ToString());
  }
}

AlerterStats Alerter::stats() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->stats;
}

}  // namespace kpistream::services
