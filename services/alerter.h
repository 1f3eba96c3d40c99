// The alert evaluator: evaluates the catalog's alert rules on a fixed
// interval and soon after each state commit ("on change"), runs each
// (rule, group) instance through the state machine (alerting/rules.h),
// and keeps instances and a bounded log of transitions in the state store,
// so a restart neither drops a firing alert nor fires it anew.
//
// KPI rules are evaluated only while the engine is ready: before partitions
// are assigned the state is not loaded yet, and a firing alert must not
// resolve on a half-loaded view. Absence and freshness rules are evaluated
// regardless: a broker outage is when they must fire.
//
// Thread-safety: all public methods are safe from any thread. Evaluation
// runs on the alerter's own thread (or the caller of EvaluateOnce in tests).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "alerting/rules.h"
#include "kpi/alert_template.h"
#include "kpi/catalog.h"
#include "kpistream/v1/alerts.pb.h"
#include "query/query.h"
#include "state/store.h"

namespace kpistream::services {

struct AlerterOptions {
  int64_t eval_interval_ms = 15000;
  // "On change": after a state commit, evaluate at most this often.
  int64_t min_eval_gap_ms = 1000;
  // Resolved instances stay listed (and are re-sent) this long, and until
  // every notification target took them.
  int64_t resolved_retention_ms = 15 * 60 * 1000;
  // Transitions kept for WatchAlerts resumption (in the store).
  size_t max_transitions = 10000;
  // The rule clock, ms. Default: the wall clock. kpid's `alerting.clock:
  // event_time` passes the newest applied event time instead.
  std::function<int64_t()> now_ms;
};

// What the evaluator reads besides the KPI state.
struct AlertSources {
  std::function<bool()> ready;
  // Newest applied event time (ms since the epoch) of a family, or of all
  // families for nullopt; 0 when none yet.
  std::function<int64_t(std::optional<kpi::Family>)> newest_event_ms;
  // Grows on every state commit; a change triggers an evaluation.
  std::function<uint64_t()> change_counter;
};

struct AlerterStats {
  uint64_t evaluations = 0;
  uint64_t evaluation_failures = 0;  // rule queries that failed
  uint64_t persist_failures = 0;
  double last_duration_s = 0;
};

class Alerter {
 public:
  // Loads persisted instances and the transition log. Instances of rules
  // that no longer exist are dropped (their resolution is not sent: the
  // rule's owner removed it).
  // REQUIRES: catalog, queries and store outlive the alerter.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Alerter>> Create(const AlerterOptions& options,
                                                                       const kpi::Catalog& catalog,
                                                                       const query::QueryService& queries,
                                                                       state::Store* store, AlertSources sources);
  ~Alerter();
  Alerter(const Alerter&) = delete;
  Alerter& operator=(const Alerter&) = delete;

  void Start();
  void Stop();  // idempotent

  // One evaluation of every rule at the rule clock's now (if ready).
  [[nodiscard]] absl::Status EvaluateOnce();

  // Pending, firing, and resolved-but-retained alerts, by rule then labels.
  std::vector<v1::Alert> Alerts() const;
  // The same with delivery state, for the notifier.
  std::vector<v1::AlertRecord> Records() const;
  uint64_t sequence() const;
  // Transitions with sequence > after, at most max. Returns false when
  // `after` is older than the oldest kept (a gap: resume is impossible).
  bool TransitionsAfter(uint64_t after, size_t max, std::vector<v1::AlertTransition>* out) const;
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

}  // namespace kpistream::services
