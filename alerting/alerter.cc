#include "alerting/alerter.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "kpi/alert_template.h"
#include "kpistream/internal/v1/alert_state.pb.h"
#include "state/keys.h"

namespace kpistream::alerting {

namespace {

namespace pb = kpistream::internal::v1;

// At most this many evaluations of a rule are sampled across one gap.
constexpr int64_t kMaxGapSamples = 60;
using kpi::AlertKind;
using kpi::AlertRule;
using Group = std::vector<std::pair<std::string, std::string>>;  // (dimension, value), in order

// Keys in the store's alerts keyspace.
constexpr std::string_view kInstancePrefix = "I/";    // rule, then the group, length-prefixed
constexpr std::string_view kTransitionPrefix = "T/";  // sequence u64 BE
constexpr std::string_view kSequenceKey = "S/sequence";
// Before 0.2.
constexpr std::string_view kLegacyInstancePrefix = "i/";
constexpr std::string_view kLegacyTransitionPrefix = "t/";

// Every part length-prefixed (varint): any bytes in a value keep the key
// unambiguous, so an instance's identity survives a restart exactly.
std::string InstanceKey(const std::string& rule, const Group& group) {
  std::string k(kInstancePrefix);
  state::AppendGroupValue(&k, rule);
  for (const auto& [d, v] : group) {
    state::AppendGroupValue(&k, d);
    state::AppendGroupValue(&k, v);
  }
  return k;
}

std::string SequenceKey(std::string_view prefix, uint64_t seq) {
  std::string k(prefix);
  state::PutU64BE(&k, seq);
  return k;
}

void ToPairs(const std::map<std::string, std::string>& m, google::protobuf::RepeatedPtrField<pb::LabelPair>* out) {
  for (const auto& [k, v] : m) {
    auto* p = out->Add();
    p->set_name(k);
    p->set_value(v);
  }
}
std::map<std::string, std::string> FromPairs(const google::protobuf::RepeatedPtrField<pb::LabelPair>& in) {
  std::map<std::string, std::string> m;
  for (const auto& p : in) m[p.name()] = p.value();
  return m;
}

int64_t LegacyMs(const pb::LegacyTimestamp& t) { return t.seconds() * 1000 + t.nanos() / 1000000; }

}  // namespace

struct Alerter::Rep {
  AlerterOptions options;
  const kpi::Catalog& catalog;
  const query::QueryService& query;
  state::Store* store;
  AlertSources sources;
  const state::Clock& wall;
  int64_t started_ms;

  struct Instance {
    const AlertRule* rule = nullptr;
    Group group;
    AlertInstance inst;
    int64_t starts_at_ms = 0;
    int64_t ends_at_ms = 0;
    int64_t resolved_wall_ms = 0;  // wall clock at resolution: retention runs on it
    bool resolution_delivered = false;
    Alert served;  // rebuilt by Refresh
  };

  mutable std::mutex mu;
  std::map<std::string, Instance> instances ABSL_GUARDED_BY(mu);
  std::deque<AlertTransition> log ABSL_GUARDED_BY(mu);
  uint64_t seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t oldest_kept ABSL_GUARDED_BY(mu) = 1;  // sequence of log.front()
  int64_t last_eval_now_ms ABSL_GUARDED_BY(mu) = 0;
  // When each rule was last evaluated (rule clock): restored from its
  // instances, else the newest evaluation of any rule.
  std::map<const AlertRule*, int64_t> rule_last_eval ABSL_GUARDED_BY(mu);
  AlerterStats stats ABSL_GUARDED_BY(mu);
  // What readers (ListAlerts, watches, the notifier, /metrics) see: the
  // state as of the last round that was persisted (replicated first, with
  // replicas). A round's transitions are logged before it is persisted; a
  // round that fails to persist is discarded (Load), and its sequence
  // numbers are given out again, so no reader may see them before. Not
  // covered: LastEvaluations (a discarded round's time shows until the
  // reload), and a round that trims the log can make TransitionsAfter
  // answer "no longer kept" early (the reader lists again; nothing is lost).
  std::vector<Alert> published_alerts ABSL_GUARDED_BY(mu);
  uint64_t published_seq ABSL_GUARDED_BY(mu) = 0;
  // Makes the current state the published one. REQUIRES: mu held.
  void Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    published_alerts.clear();
    for (const auto& [k, in] : instances) published_alerts.push_back(in.served);
    published_seq = seq;
  }

  std::mutex eval_mu;  // one evaluation at a time
  int reloads = 0;     // Load()s so far: the first is logged at info, the others (a follower's) at debug

  std::mutex subs_mu;
  std::map<int, std::function<void()>> subs ABSL_GUARDED_BY(subs_mu);
  int next_sub ABSL_GUARDED_BY(subs_mu) = 0;

  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool stop = false;       // guarded by wake_mu
  bool committed = false;  // guarded by wake_mu: a commit since the last evaluation
  std::atomic<bool> stopped{false};
  std::thread thread;
  Alerter* owner = nullptr;

  Rep(const AlerterOptions& o, const kpi::Catalog& c, const query::QueryService& q, state::Store* s, AlertSources src,
      const state::Clock& w)
      : options(o), catalog(c), query(q), store(s), sources(std::move(src)), wall(w), started_ms(w.NowMs()) {}

  int64_t MaxGapMs() const {
    return options.max_evaluation_gap_ms > 0 ? options.max_evaluation_gap_ms
                                             : std::max<int64_t>(4 * options.eval_interval_ms, 60000);
  }
  // Replaces the in-memory state with the stored one (at start, and again
  // on a follower or after a discarded round). REQUIRES: eval_mu held, or
  // no evaluation running yet.
  absl::Status Load();
  absl::Status MigrateLegacy(const std::map<std::string, const AlertRule*>& rules,
                             std::vector<state::Store::AlertWrite>* writes);
  void Run();
  // Evaluates one rule: (group, condition) per group, or an error.
  absl::StatusOr<std::vector<std::pair<Group, ConditionResult>>> Evaluate(const AlertRule& r, int64_t now_ms);
  absl::StatusOr<std::vector<query::GroupValue>> Query(const AlertRule& r, int64_t end_s);
  void Refresh(Instance* in) const;

  // One evaluation round, in phases (EvaluateOnce).
  struct Evaluation {
    int64_t at_ms;
    absl::StatusOr<std::vector<std::pair<Group, ConditionResult>>> groups;
  };
  struct RuleResult {
    const AlertRule* rule;
    std::vector<Evaluation> evals;  // oldest first; the last at now
  };
  // What a round changed: the store writes and the transitions to announce.
  struct Changes {
    std::vector<state::Store::AlertWrite> writes;
    std::vector<AlertTransition> transitions;
  };
  // Evaluates the rules that may run now, sampling KPI rules across a gap.
  // Outside mu: queries read the store.
  std::vector<RuleResult> EvaluateRules(int64_t now, bool caught_up, bool replaying);
  // Runs the instances of each rule through the state machine.
  void ApplyResults(const std::vector<RuleResult>& results, int64_t wall_now, Changes* changes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void Step(Instance* in, const ConditionResult& c, int64_t at, int64_t wall_now, Changes* changes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Writes every instance, drops finished ones, trims the transition log.
  void PersistInstances(int64_t wall_now, Changes* changes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  static pb::AlertInstanceState StateOf(const Instance& in);
  std::string Persisted(const Instance& in) const { return StateOf(in).SerializeAsString(); }
  static AlertTransition FromRecord(const pb::AlertTransitionRecord& r);
  static pb::AlertTransitionRecord ToRecord(const AlertTransition& t, const Instance& in);
};

// An instance's persisted form.
pb::AlertInstanceState Alerter::Rep::StateOf(const Instance& in) {
  pb::AlertInstanceState s;
  s.set_rule(in.rule->name);
  for (const auto& [d, v] : in.group) {
    auto* p = s.add_group();
    p->set_name(d);
    p->set_value(v);
  }
  s.set_state(static_cast<int>(in.inst.state));
  if (in.inst.value) s.set_value(*in.inst.value);
  s.set_active_since_ms(in.inst.active_since_ms);
  s.set_firing_since_ms(in.inst.firing_since_ms);
  s.set_resolved_at_ms(in.inst.resolved_at_ms);
  s.set_last_true_ms(in.inst.last_true_ms);
  s.set_last_evaluated_ms(in.inst.last_evaluated_ms);
  s.set_starts_at_ms(in.starts_at_ms);
  s.set_ends_at_ms(in.ends_at_ms);
  s.set_resolution_delivered(in.resolution_delivered);
  s.set_resolved_wall_ms(in.resolved_wall_ms);
  return s;
}

// A transition as logged: the instance's state and the alert as served.
pb::AlertTransitionRecord Alerter::Rep::ToRecord(const AlertTransition& t, const Instance& in) {
  pb::AlertTransitionRecord r;
  r.set_sequence(t.sequence);
  r.set_from(static_cast<int>(t.from));
  auto* a = r.mutable_alert();
  *a->mutable_instance() = StateOf(in);
  ToPairs(t.alert.labels, a->mutable_labels());
  ToPairs(t.alert.annotations, a->mutable_annotations());
  a->set_fingerprint(t.alert.fingerprint);
  return r;
}

AlertTransition Alerter::Rep::FromRecord(const pb::AlertTransitionRecord& r) {
  AlertTransition t;
  t.sequence = r.sequence();
  t.from = static_cast<AlertState>(r.from());
  const auto& s = r.alert().instance();
  Alert& a = t.alert;
  a.rule = s.rule();
  a.labels = FromPairs(r.alert().labels());
  a.annotations = FromPairs(r.alert().annotations());
  a.state = static_cast<AlertState>(s.state());
  if (s.has_value()) a.value = s.value();
  a.active_since_ms = s.active_since_ms();
  a.firing_since_ms = s.firing_since_ms();
  a.resolved_at_ms = s.resolved_at_ms();
  a.last_true_ms = s.last_true_ms();
  a.last_evaluated_ms = s.last_evaluated_ms();
  a.starts_at_ms = s.starts_at_ms();
  a.ends_at_ms = s.ends_at_ms();
  a.fingerprint = r.alert().fingerprint();
  return t;
}

absl::Status Alerter::Rep::Load() {
  std::lock_guard<std::mutex> l(mu);
  // Emptied and refilled under one lock: a reader (ListAlerts, a watch,
  // the notifier) never sees a reloading alerter with no alerts and
  // sequence 0.
  instances.clear();
  log.clear();
  rule_last_eval.clear();
  last_eval_now_ms = 0;
  seq = 0;  // the stored one: a discarded round's transitions never happened
  std::map<std::string, const AlertRule*> rules;
  for (const auto& r : catalog.alerts) rules[r.name] = &r;
  std::vector<state::Store::AlertWrite> writes;
  const int64_t wall_now = wall.NowMs();
  auto st = store->ScanAlerts(kInstancePrefix, [&](std::string_view key, std::string_view value) {
    pb::AlertInstanceState s;
    if (!s.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      spdlog::error("alert state: an unreadable instance record was dropped");
      writes.emplace_back(std::string(key), std::nullopt);
      return;
    }
    auto rule = rules.find(s.rule());
    if (rule == rules.end()) {
      spdlog::info("alert {}: the rule is gone from the catalog; its state is dropped", s.rule());
      writes.emplace_back(std::string(key), std::nullopt);
      return;
    }
    Instance in;
    in.rule = rule->second;
    for (const auto& p : s.group()) in.group.emplace_back(p.name(), p.value());
    in.inst.state = static_cast<AlertState>(s.state());
    if (s.has_value()) in.inst.value = s.value();
    in.inst.active_since_ms = s.active_since_ms();
    in.inst.firing_since_ms = s.firing_since_ms();
    in.inst.resolved_at_ms = s.resolved_at_ms();
    in.inst.last_true_ms = s.last_true_ms();
    in.inst.last_evaluated_ms = s.last_evaluated_ms();
    in.starts_at_ms = s.starts_at_ms();
    in.ends_at_ms = s.ends_at_ms();
    in.resolution_delivered = s.resolution_delivered();
    // Records from before the field: the resolution as Alertmanager was told.
    in.resolved_wall_ms = s.resolved_wall_ms() ? s.resolved_wall_ms() : in.ends_at_ms;
    instances.emplace(std::string(key), std::move(in));
  });
  if (!st.ok()) return st;
  if (auto m = MigrateLegacy(rules, &writes); !m.ok()) return m;
  for (auto& [key, in] : instances) {
    // A rule clock stamped far in the future (an event from a wrong clock,
    // before kpid refused those) would hold every evaluation back until it
    // passed: no evaluation is later than the wall clock.
    in.inst.last_evaluated_ms = std::min(in.inst.last_evaluated_ms, wall_now);
    last_eval_now_ms = std::max(last_eval_now_ms, in.inst.last_evaluated_ms);
    auto& last = rule_last_eval[in.rule];
    last = std::max(last, in.inst.last_evaluated_ms);
    Refresh(&in);
  }
  for (const auto& r : catalog.alerts) {
    if (!rule_last_eval.count(&r) && last_eval_now_ms > 0) rule_last_eval[&r] = last_eval_now_ms;
  }
  st = store->ScanAlerts(kTransitionPrefix, [&](std::string_view, std::string_view value) {
    pb::AlertTransitionRecord r;
    if (r.ParseFromArray(value.data(), static_cast<int>(value.size()))) log.push_back(FromRecord(r));
  });
  if (!st.ok()) return st;
  st = store->ScanAlerts(kSequenceKey, [&](std::string_view, std::string_view value) {
    if (value.size() == 8) seq = std::max(seq, state::GetU64BE(value.data()));
  });
  if (!st.ok()) return st;
  if (!log.empty()) seq = std::max(seq, log.back().sequence);
  oldest_kept = log.empty() ? seq + 1 : log.front().sequence;
  if (!writes.empty()) {
    if (auto w = store->WriteAlerts(writes); !w.ok()) return w;
  }
  Publish();
  spdlog::log(reloads++ ? spdlog::level::debug : spdlog::level::info,
              "alerts: {} rules, {} instances restored, transition sequence {}", catalog.alerts.size(),
              instances.size(), seq);
  return absl::OkStatus();
}

// Instances kept as kpistream.v1.AlertRecord under "i/" (before 0.2) are
// rewritten in the new format; the old transition log is dropped, its
// sequence kept (a watcher resuming from before the upgrade is told to list
// again).
absl::Status Alerter::Rep::MigrateLegacy(const std::map<std::string, const AlertRule*>& rules,
                                         std::vector<state::Store::AlertWrite>* writes) {
  uint64_t legacy_seq = 0;
  auto st = store->ScanAlerts(kLegacyTransitionPrefix, [&](std::string_view key, std::string_view) {
    if (key.size() == kLegacyTransitionPrefix.size() + 8) {
      legacy_seq = std::max(legacy_seq, state::GetU64BE(key.data() + kLegacyTransitionPrefix.size()));
    }
    writes->emplace_back(std::string(key), std::nullopt);
  });
  if (!st.ok()) return st;
  if (legacy_seq > seq) {
    seq = legacy_seq;
    std::string v;
    state::PutU64BE(&v, seq);
    writes->emplace_back(std::string(kSequenceKey), v);
  }
  return store->ScanAlerts(kLegacyInstancePrefix, [&](std::string_view key, std::string_view value) {
    writes->emplace_back(std::string(key), std::nullopt);
    pb::LegacyAlertRecord rec;
    if (!rec.ParseFromArray(value.data(), static_cast<int>(value.size()))) return;
    auto rule = rules.find(rec.alert().rule());
    if (rule == rules.end()) return;
    Instance in;
    in.rule = rule->second;
    // The old key: rule name, then "\0dim=value" pairs (ambiguous for
    // values holding NUL or '=': the reason for the new format).
    const std::string k(key.substr(kLegacyInstancePrefix.size()));
    size_t pos = k.find('\0');
    while (pos != std::string::npos) {
      const size_t next = k.find('\0', pos + 1);
      const std::string kv = k.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) in.group.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      pos = next;
    }
    const auto& a = rec.alert();
    in.inst.state = static_cast<AlertState>(a.state());
    if (a.has_value()) in.inst.value = a.value();
    in.inst.active_since_ms = LegacyMs(a.active_since());
    in.inst.firing_since_ms = LegacyMs(a.firing_since());
    in.inst.resolved_at_ms = LegacyMs(a.resolved_at());
    in.inst.last_true_ms = LegacyMs(a.last_true());
    in.inst.last_evaluated_ms = LegacyMs(a.last_evaluated());
    in.starts_at_ms = std::min(in.inst.firing_since_ms, wall.NowMs());
    in.ends_at_ms = in.inst.resolved_at_ms ? std::min(in.inst.resolved_at_ms, wall.NowMs()) : 0;
    in.resolved_wall_ms = in.ends_at_ms;
    in.resolution_delivered = rec.resolution_delivered();
    const std::string new_key = InstanceKey(in.rule->name, in.group);
    writes->emplace_back(new_key, Persisted(in));
    instances.emplace(new_key, std::move(in));
  });
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
  if (!answer->missing_partitions.empty()) {
    // Part of the data is not in the answer: judging the rule on it could
    // resolve (or fire) an alert on a partial count.
    return absl::UnavailableError(fmt::format("held: the answer lacks {} partition(s), e.g. {}",
                                              answer->missing_partitions.size(), answer->missing_partitions[0]));
  }
  return std::move(answer->values);
}

absl::StatusOr<std::vector<std::pair<Group, ConditionResult>>> Alerter::Rep::Evaluate(const AlertRule& r,
                                                                                      int64_t now_ms) {
  std::vector<std::pair<Group, ConditionResult>> out;
  // The group: the filter's dimensions, then the group-by's.
  auto group_of = [&](const query::Labels& labels) {
    Group g(r.filter.begin(), r.filter.end());
    for (const auto& [d, v] : labels) g.emplace_back(d, v);
    return g;
  };
  const int64_t now_s = (now_ms + 999) / 1000;
  switch (r.kind) {
    case AlertKind::kThreshold: {
      auto vals = Query(r, now_s);
      if (!vals.ok()) return vals.status();
      const auto& kpi = catalog.kpis[static_cast<size_t>(r.kpi)];
      for (const auto& g : *vals) out.emplace_back(group_of(g.group), EvalThreshold(r, kpi, g.value));
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
        out.emplace_back(group_of(g.group), EvalChange(r, g.value, it == before.end() ? std::nullopt : it->second));
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
      for (const auto& g : *now_vals) out.emplace_back(group_of(g.group), EvalAnomaly(r, g.value, history[g.group]));
      break;
    }
    case AlertKind::kAbsence:
    case AlertKind::kFreshness: {
      const int64_t newest = sources.newest_event_ms(r.kind == AlertKind::kAbsence ? r.family : std::nullopt);
      // Nothing ever applied: count from when kpid started.
      const int64_t since = newest > 0 ? newest : std::min(now_ms, started_ms);
      Group g;
      if (r.family) g.emplace_back("family", std::string(kpi::kFamilyNames[static_cast<size_t>(*r.family)]));
      out.emplace_back(g, EvalAge(r, static_cast<double>(now_ms - since) / 1000.0));
      break;
    }
  }
  return out;
}

// Rebuilds the served alert of an instance from its state.
void Alerter::Rep::Refresh(Instance* in) const {
  const AlertRule& r = *in->rule;
  const kpi::KpiDef* kpi = r.kpi >= 0 ? &catalog.kpis[static_cast<size_t>(r.kpi)] : nullptr;
  Alert& a = in->served;
  a = Alert{};
  a.rule = r.name;
  for (const auto& [d, v] : in->group) a.labels[d] = v;
  for (const auto& [k, v] : r.labels) a.labels[k] = v;
  a.labels["alertname"] = r.name;
  a.labels["severity"] = r.severity;
  if (kpi) a.labels["kpi"] = kpi->name;
  kpi::TemplateData d;
  d.value = in->inst.value;
  if (r.kind == AlertKind::kChange && d.value) *d.value *= 100;
  d.threshold = kpi::AlertThreshold(r, kpi);
  d.kpi = kpi ? kpi->name : "";
  d.window = r.window;
  d.unit = kpi ? kpi->unit : "seconds";
  d.severity = r.severity;
  d.labels = a.labels;
  for (const auto& [k, text] : r.annotations) a.annotations[k] = kpi::ExpandAlertTemplate(text, d);
  a.state = in->inst.state;
  a.value = in->inst.value;
  a.active_since_ms = in->inst.active_since_ms;
  a.firing_since_ms = in->inst.firing_since_ms;
  a.resolved_at_ms = in->inst.resolved_at_ms;
  a.last_true_ms = in->inst.last_true_ms;
  a.last_evaluated_ms = in->inst.last_evaluated_ms;
  a.starts_at_ms = in->starts_at_ms;
  a.ends_at_ms = in->ends_at_ms;
  a.fingerprint = AlertFingerprint(a.labels);
  a.resolution_delivered = in->resolution_delivered;
}

absl::StatusOr<std::unique_ptr<Alerter>> Alerter::Create(const AlerterOptions& options, const kpi::Catalog& catalog,
                                                         const query::QueryService& queries, state::Store* store,
                                                         AlertSources sources, const state::Clock& wall) {
  auto rep = std::make_unique<Rep>(options, catalog, queries, store, std::move(sources), wall);
  if (!rep->options.now_ms) rep->options.now_ms = [&wall] { return wall.NowMs(); };
  if (!rep->sources.caught_up) rep->sources.caught_up = [] { return true; };
  if (!rep->sources.replaying) rep->sources.replaying = [] { return false; };
  if (!rep->sources.newest_event_ms) rep->sources.newest_event_ms = [](auto) { return int64_t{0}; };
  if (auto st = rep->Load(); !st.ok()) return st;
  return std::unique_ptr<Alerter>(new Alerter(std::move(rep)));
}

Alerter::Alerter(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Alerter::~Alerter() { Stop(); }

std::vector<Alerter::Rep::RuleResult> Alerter::Rep::EvaluateRules(int64_t now, bool caught_up, bool replaying) {
  // What each rule's condition was: at now, and, for KPI rules the alerter
  // has not evaluated for longer than the allowed gap (kpid down or
  // replaying, a jump of the event-time clock), at sampled times across the
  // gap, read from the stored state, so that `for` and keep_firing_for
  // follow the condition through it instead of assuming it held.
  const int64_t max_gap = MaxGapMs();
  std::vector<RuleResult> results;
  for (const auto& r : catalog.alerts) {
    // KPI rules wait for a loaded, caught-up state: neither a half-loaded
    // view nor a replay in progress changes an alert. Age rules (absence,
    // freshness) read only the newest applied event times, and matter most
    // exactly when the engine is not ready (Kafka unreachable, commits
    // failing), but they too wait while partitions replay.
    const bool age_rule = r.kind == AlertKind::kAbsence || r.kind == AlertKind::kFreshness;
    if (age_rule ? replaying : !caught_up) continue;
    RuleResult rr{&r, {}};
    int64_t last = 0;
    {
      std::lock_guard<std::mutex> l(mu);
      if (auto it = rule_last_eval.find(&r); it != rule_last_eval.end()) last = it->second;
    }
    if (!age_rule && last > 0 && now - last > max_gap) {
      const int64_t gap = now - last;
      const int64_t samples =
          std::clamp<int64_t>(gap / std::max<int64_t>(options.eval_interval_ms, 1), 1, kMaxGapSamples);
      for (int64_t k = 1; k < samples; ++k) {
        const int64_t at = last + gap * k / samples;
        rr.evals.push_back({at, Evaluate(r, at)});
      }
    }
    rr.evals.push_back({now, Evaluate(r, now)});
    results.push_back(std::move(rr));
  }
  return results;
}

void Alerter::Rep::Step(Instance* in, const ConditionResult& c, int64_t at, int64_t wall_now, Changes* changes) {
  // KPI rules were sampled across a gap; age rules cannot be read back in
  // time: for them a gap counts for nothing.
  const bool age_rule = in->rule->kind == AlertKind::kAbsence || in->rule->kind == AlertKind::kFreshness;
  const int64_t since = in->inst.last_evaluated_ms;
  const int64_t gap = age_rule && since > 0 && at - since > MaxGapMs() ? at - since : 0;
  if (gap > 0) ++stats.gaps;
  const auto from = StepAlert(*in->rule, c.active, c.value, at, gap, &in->inst);
  if (from) {
    // The wall-clock firing and resolution times, fixed once: what
    // Alertmanager is told, on every resend and after restarts.
    if (in->inst.state == AlertState::kFiring) {
      in->starts_at_ms = std::min(in->inst.firing_since_ms, wall_now);
      in->ends_at_ms = 0;
    }
    if (in->inst.state == AlertState::kResolved) {
      in->ends_at_ms = std::max(in->starts_at_ms, std::min(in->inst.resolved_at_ms, wall_now));
      in->resolved_wall_ms = wall_now;
      in->resolution_delivered = false;
    }
  }
  Refresh(in);
  if (from) {
    AlertTransition t;
    t.sequence = ++seq;
    t.from = *from;
    t.alert = in->served;
    changes->writes.emplace_back(SequenceKey(kTransitionPrefix, t.sequence), ToRecord(t, *in).SerializeAsString());
    changes->transitions.push_back(std::move(t));
  }
}

void Alerter::Rep::ApplyResults(const std::vector<RuleResult>& results, int64_t wall_now, Changes* changes) {
  for (const auto& rr : results) {
    const AlertRule& r = *rr.rule;
    if (rr.evals.size() > 1) ++stats.gaps_sampled;
    for (const auto& ev : rr.evals) {
      if (!ev.groups.ok()) {
        ++stats.evaluation_failures;
        spdlog::warn("alert {}: evaluation failed: {}", r.name, ev.groups.status().ToString());
        break;  // keep the instances as they are
      }
      std::set<std::string> seen;
      for (const auto& [group, cond] : *ev.groups) {
        const std::string key = InstanceKey(r.name, group);
        seen.insert(key);
        auto it = instances.find(key);
        if (it == instances.end()) {
          if (!cond.active) continue;  // nothing to track
          Instance in;
          in.rule = &r;
          in.group = group;
          it = instances.emplace(key, std::move(in)).first;
        }
        Step(&it->second, cond, ev.at_ms, wall_now, changes);
      }
      // Groups that vanished from the result: their condition is false.
      for (auto& [key, in] : instances) {
        if (in.rule != &r || seen.count(key)) continue;
        Step(&in, ConditionResult{}, ev.at_ms, wall_now, changes);
      }
      rule_last_eval[&r] = ev.at_ms;
    }
  }
}

void Alerter::Rep::PersistInstances(int64_t wall_now, Changes* changes) {
  auto& writes = changes->writes;
  for (auto it = instances.begin(); it != instances.end();) {
    auto& in = it->second;
    // Retention is a wall-clock matter (how long Alertmanager and readers
    // are re-told), as in Prometheus, whatever the rule clock.
    const bool gone =
        in.inst.state == AlertState::kInactive || (in.inst.state == AlertState::kResolved && in.resolution_delivered &&
                                                   wall_now - in.resolved_wall_ms >= options.resolved_retention_ms);
    if (gone) {
      writes.emplace_back(it->first, std::nullopt);
      it = instances.erase(it);
      continue;
    }
    writes.emplace_back(it->first, Persisted(in));
    ++it;
  }
  for (auto& t : changes->transitions) log.push_back(t);
  while (log.size() > options.max_transitions) {
    writes.emplace_back(SequenceKey(kTransitionPrefix, log.front().sequence), std::nullopt);
    log.pop_front();
  }
  if (!changes->transitions.empty()) {
    std::string v;
    state::PutU64BE(&v, seq);
    writes.emplace_back(std::string(kSequenceKey), v);
  }
  oldest_kept = log.empty() ? seq + 1 : log.front().sequence;
}

absl::Status Alerter::Reload() {
  std::lock_guard<std::mutex> eval_lock(rep_->eval_mu);
  if (auto st = rep_->Load(); !st.ok()) return st;
  std::lock_guard<std::mutex> l(rep_->subs_mu);
  for (auto& [id, fn] : rep_->subs) fn();
  return absl::OkStatus();
}

absl::Status Alerter::EvaluateOnce() {
  std::lock_guard<std::mutex> eval_lock(rep_->eval_mu);
  if (rep_->sources.active && !rep_->sources.active()) return absl::OkStatus();
  const bool caught_up = rep_->sources.caught_up();
  const bool replaying = rep_->sources.replaying();
  const int64_t wall_now = rep_->wall.NowMs();
  // An event-time clock reads 0 until the first event arrives: nothing to
  // evaluate yet (and no window ends at the epoch). It is never ahead of
  // the wall clock.
  const int64_t now = std::min(rep_->options.now_ms(), wall_now);
  if (now <= 0) return absl::OkStatus();
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    // The event-time clock restarts at the committed watermark, which can
    // be behind the last evaluation: wait until it is past it.
    if (now < rep_->last_eval_now_ms) return absl::OkStatus();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto results = rep_->EvaluateRules(now, caught_up, replaying);
  Rep::Changes changes;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    rep_->ApplyResults(results, wall_now, &changes);
    rep_->PersistInstances(wall_now, &changes);
    rep_->last_eval_now_ms = now;
    ++rep_->stats.evaluations;
    rep_->stats.last_duration_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  for (const auto& t : changes.transitions) {
    spdlog::info("alert {} {}: {} -> {} (value {})", t.alert.rule, t.alert.fingerprint, AlertStateName(t.from),
                 AlertStateName(t.alert.state), t.alert.value ? fmt::format("{}", *t.alert.value) : "none");
  }
  // Persist before anyone is told: a transition that was announced must
  // survive a crash (and, with replicas, a failover: replicated first).
  // With replicas: replicated, then written locally, by the replicate
  // function.
  absl::Status st = absl::OkStatus();
  if (!rep_->sources.replicate) {
    st = rep_->store->WriteAlerts(changes.writes);
  } else if (!changes.writes.empty()) {
    st = rep_->sources.replicate(changes.writes);
  }
  if (!st.ok()) {
    {
      std::lock_guard<std::mutex> l(rep_->mu);
      ++rep_->stats.persist_failures;
    }
    // The round is discarded whole (a fenced leader's, or one the disk
    // refused): the stored state is the truth again, and the next round
    // evaluates anew, its transitions taking this one's sequence numbers.
    if (auto back = rep_->Load(); !back.ok()) {
      spdlog::error("alerts: reloading the stored state: {}", back.ToString());
    }
    return st;
  }
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    rep_->Publish();
  }
  if (!changes.transitions.empty()) {
    std::lock_guard<std::mutex> l(rep_->subs_mu);
    for (auto& [id, fn] : rep_->subs) fn();
  }
  return absl::OkStatus();
}

void Alerter::Rep::Run() {
  auto last_eval = std::chrono::steady_clock::now() - std::chrono::hours(1);
  std::unique_lock<std::mutex> lk(wake_mu);
  while (!stop) {
    // Due on the interval, or after a commit once min_eval_gap has passed
    // since the last evaluation.
    wake_cv.wait_until(lk, last_eval + std::chrono::milliseconds(options.eval_interval_ms),
                       [&] { return stop || committed; });
    if (stop) break;
    if (committed) {
      wake_cv.wait_until(lk, last_eval + std::chrono::milliseconds(options.min_eval_gap_ms), [&] { return stop; });
      if (stop) break;
    }
    committed = false;
    last_eval = std::chrono::steady_clock::now();
    lk.unlock();
    // The Alerter object owns this Rep; EvaluateOnce is reached through it.
    if (auto st = owner->EvaluateOnce(); !st.ok()) spdlog::error("alert evaluation: {}", st.ToString());
    lk.lock();
  }
}

void Alerter::OnCommit() {
  {
    std::lock_guard<std::mutex> lk(rep_->wake_mu);
    rep_->committed = true;
  }
  rep_->wake_cv.notify_all();
}

void Alerter::Start() {
  rep_->owner = this;
  rep_->thread = std::thread([this] { rep_->Run(); });
}

void Alerter::Stop() {
  {
    std::lock_guard<std::mutex> lk(rep_->wake_mu);
    if (rep_->stop) return;
    rep_->stop = true;
  }
  rep_->stopped = true;
  rep_->wake_cv.notify_all();
  if (rep_->thread.joinable()) rep_->thread.join();
  std::lock_guard<std::mutex> l(rep_->subs_mu);
  for (auto& [id, fn] : rep_->subs) fn();
}

bool Alerter::stopped() const { return rep_->stopped.load(); }

std::vector<Alert> Alerter::Alerts() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->published_alerts;
}

std::map<std::string, int64_t> Alerter::LastEvaluations() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  std::map<std::string, int64_t> out;
  for (const auto& [rule, ms] : rep_->rule_last_eval) out[rule->name] = ms;
  return out;
}

uint64_t Alerter::sequence() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->published_seq;
}

bool Alerter::TransitionsAfter(uint64_t after, size_t max, std::vector<AlertTransition>* out) const {
  std::lock_guard<std::mutex> l(rep_->mu);
  const uint64_t published = rep_->published_seq;
  if (after + 1 < rep_->oldest_kept && after < published) return false;
  for (const auto& t : rep_->log) {
    if (out->size() >= max || t.sequence > published) break;
    if (t.sequence > after) out->push_back(t);
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
  // Between rounds: a round's writes (built before, written after its
  // lock on mu) can then neither overwrite this mark with an older state
  // nor be overwritten by it.
  std::lock_guard<std::mutex> eval_lock(rep_->eval_mu);
  std::vector<state::Store::AlertWrite> writes;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    for (auto& [key, in] : rep_->instances) {
      if (in.inst.state != AlertState::kResolved || in.resolution_delivered) continue;
      if (std::find(fingerprints.begin(), fingerprints.end(), in.served.fingerprint) == fingerprints.end()) continue;
      in.resolution_delivered = true;
      in.served.resolution_delivered = true;
      writes.emplace_back(key, rep_->Persisted(in));
    }
    // Not fatal if it is not stored (below): shown at once, so the notifier
    // does not send the resolution again.
    if (!writes.empty()) rep_->Publish();
  }
  if (writes.empty()) return;
  if (rep_->sources.replicate) {
    if (auto st = rep_->sources.replicate(writes); !st.ok()) {
      // Not fatal: the next leader sends the resolution again.
      spdlog::warn("alerts: replicating delivered resolutions: {}", st.ToString());
    }
    return;
  }
  if (auto st = rep_->store->WriteAlerts(writes); !st.ok()) {
    // Not fatal: the resolution is sent again after a restart.
    spdlog::warn("alerts: recording delivered resolutions: {}", st.ToString());
  }
}

AlerterStats Alerter::stats() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->stats;
}

}  // namespace kpistream::alerting
