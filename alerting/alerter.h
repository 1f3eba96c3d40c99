// The alert evaluator: evaluates the catalog's alert rules on a fixed
// interval and soon after each state commit ("on change"), runs each
// (rule, group) instance through the state machine (alerting/rules.h), and
// keeps instances and a bounded log of transitions in the state store, so a
// restart neither drops a firing alert nor fires it anew, nor changes any
// alert's identity.
//
// Nothing changes state from a replay: KPI rules are evaluated only once
// kpid has caught up (every partition read up to the high watermark it had
// when assigned), and absence and freshness rules are held while
// partitions are replaying (a restart or a redeploy pages nobody). Absence
// and freshness rules are evaluated during a broker outage, which is when
// they must fire.
//
// Time a rule was not evaluated (kpid down or replaying, a jump of the
// event-time clock) is a gap. A KPI rule's condition is evaluated at up to
// 60 sampled times across it, from the stored state, so `for` and
// keep_firing_for follow what the condition was; an age rule's gap counts
// for nothing (StepAlert), as it cannot be read back in time.
//
// With replicas, one leader evaluates (AlertSources::active) on the
// cluster-wide values and replicates every write of its state
// (AlertSources::replicate); the others Reload what it wrote, so every
// replica lists the same alerts and a new leader starts where the old one
// stopped (services/alert_leader.h). A KPI answer that lacks partitions
// (missing_partitions: a rebalance, a replica gone) changes no alert: the
// rule's evaluation is held, as during a replay.
//
// Thread-safety: all public methods are safe from any thread. Evaluation
// runs on the alerter's own thread (or the caller of EvaluateOnce in tests).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "alerting/rules.h"
#include "kpi/catalog.h"
#include "query/query.h"
#include "state/clock.h"
#include "state/store.h"

namespace kpistream::alerting {

struct AlerterOptions {
  int64_t eval_interval_ms = 15000;
  // "On change": after a state commit, evaluate at most this often.
  int64_t min_eval_gap_ms = 1000;
  // An instance not evaluated for longer than this (on the rule clock) has
  // gone through a gap (StepAlert). 0: max(4 x eval_interval, 1 min).
  int64_t max_evaluation_gap_ms = 0;
  // Resolved instances stay listed (and are re-sent) this long on the WALL
  // clock, whatever the rule clock, and until every notification target
  // took them.
  int64_t resolved_retention_ms = 15 * 60 * 1000;
  // Transitions kept for WatchAlerts resumption (in the store).
  size_t max_transitions = 10000;
  // The rule clock, ms. Default: the wall clock. kpid's `alerting.clock:
  // event_time` passes the newest applied event time (never ahead of the
  // wall clock) instead.
  std::function<int64_t()> now_ms;
};

// What the evaluator reads besides the KPI state.
struct AlertSources {
  // KPI rules are evaluated only when this holds: the state is loaded and no
  // replay is in progress (ingest::Engine::CaughtUp).
  std::function<bool()> caught_up;
  // Absence and freshness rules are held while this holds: partitions are
  // being replayed (ingest::Engine::Replaying).
  std::function<bool()> replaying;
  // Newest applied event time (ms since the epoch) of a family, or of all
  // families for nullopt; 0 when none yet.
  std::function<int64_t(std::optional<kpi::Family>)> newest_event_ms;
  // Replicas (services/alert_leader.h): whether this replica evaluates the
  // rules (it leads); null: always. A replica that does not lead holds its
  // alerts as the leader's state replicated into its store (Reload).
  std::function<bool()> active;
  // The leader's writes of its alert state: replicated, then written to
  // the local store, both by this function (instead of the alerter writing
  // the store). An error (no longer the leader) discards the round, and the
  // in-memory state goes back to the stored one. Null: local only.
  std::function<absl::Status(const std::vector<state::Store::AlertWrite>&)> replicate;
};

struct AlerterStats {
  uint64_t evaluations = 0;
  uint64_t evaluation_failures = 0;  // rule queries that failed
  uint64_t persist_failures = 0;
  uint64_t gaps = 0;          // instance evaluations after a gap (age rules: counted for nothing)
  uint64_t gaps_sampled = 0;  // KPI rule evaluations that sampled the condition across a gap
  double last_duration_s = 0;
};

class Alerter {
 public:
  // Loads persisted instances and the transition log (migrating the format
  // before 0.2). Instances of rules that no longer exist are dropped (their
  // resolution is not sent: the rule's owner removed it).
  // REQUIRES: catalog, queries, store and wall outlive the alerter.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Alerter>> Create(const AlerterOptions& options,
                                                                       const kpi::Catalog& catalog,
                                                                       const query::QueryService& queries,
                                                                       state::Store* store, AlertSources sources,
                                                                       const state::Clock& wall = state::Clock::Wall());
  ~Alerter();
  Alerter(const Alerter&) = delete;
  Alerter& operator=(const Alerter&) = delete;

  void Start();
  // A state commit happened (ingest::Engine's commit notification): the
  // evaluator runs soon, at most once per min_eval_gap. From any thread.
  void OnCommit();
  // Stops evaluating and wakes every subscriber once more, so that they see
  // stopped(). Idempotent.
  void Stop();
  bool stopped() const;

  // One evaluation of every rule at the rule clock's now (nothing when
  // sources.active says this replica does not lead).
  [[nodiscard]] absl::Status EvaluateOnce();
  // Reads instances and the transition log from the store again (the
  // leader's state replicated into it), and tells subscribers.
  [[nodiscard]] absl::Status Reload();

  // Pending, firing, and resolved-but-retained alerts, by rule then group,
  // as of the last evaluation round that was persisted (replicated first,
  // with replicas): a round is never seen before it is, nor when it fails
  // (Alerts, sequence and TransitionsAfter alike).
  std::vector<Alert> Alerts() const;
  // When each rule (by name) was last evaluated, on the rule clock (ms; rules
  // never evaluated are absent).
  std::map<std::string, int64_t> LastEvaluations() const;
  uint64_t sequence() const;
  // Transitions with sequence > after, at most max. Returns false when
  // `after` is older than the oldest kept (a gap: resume is impossible).
  bool TransitionsAfter(uint64_t after, size_t max, std::vector<AlertTransition>* out) const;
  // fn runs (on the evaluating thread) after new transitions are logged.
  int Subscribe(std::function<void()> fn);
  void Unsubscribe(int id);  // after it returns, fn is not running

  // For the notifier: resolved alerts whose resolution every target took.
  void MarkResolutionDelivered(const std::vector<std::string>& fingerprints);
  AlerterStats stats() const;

 private:
  struct Rep;
  explicit Alerter(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::alerting
