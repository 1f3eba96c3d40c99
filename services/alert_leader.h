// Alerts evaluated once across replicas (scale-out, docs/SCALE_OUT.md
// "Alerts evaluated once"): one replica leads, elected through Kafka, and
// its alert state lives in Kafka, where the next leader finds it.
//
// Election: every replica's election consumer joins the group
// "<group>.__alerts-leader" on the single-partition topic
// "<group>.__alerts-leader.changelog" (never written; kpid creates it). The
// member the partition is assigned to leads; cooperative-sticky, so a
// replica joining never moves the lead. Dynamic membership, so a graceful
// stop hands the lead over at once; a kill -9 after the session timeout
// (6 s).
//
// State: the leader's alert writes (services: Alerter's instances, the
// transition log) go, one Kafka transaction per evaluation, to the
// compacted single-partition topic "<group>.__alerts.changelog" (a deletion is
// a tombstone) before they are applied to its own store. Every replica
// tails that topic (read_committed) into its store and reloads its alerter,
// so ListAlerts and WatchAlerts answer alike everywhere.
//
// Taking the lead: the new leader opens the transactional producer
// "<group>.__alerts" (the same id on every replica), which fences the
// previous leader's producer and aborts its open transaction; then reads the
// topic to its end; only then does leader() turn true and `leading(true)`
// run. A deposed leader's writes fail (fenced), so two leaders never both
// change the state. Losing the lead (revoked, or fenced) turns leader()
// false at once and runs `leading(false)`.
//
// Both topic names end in ".changelog" under the group's prefix: a topic
// pattern never reads them (ingest/topic_match.h).
//
// Thread-safety: all methods from any thread; callbacks run on the
// leader's own thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/engine.h"
#include "state/store.h"

namespace kpistream::services {

// Topic names under the group's prefix: "<group>.__alerts.changelog" and
// "<group>.__alerts-leader.changelog". An input topic named like these is
// refused (services/config.cc): its changelog would be the same topic.
inline constexpr std::string_view kAlertStateTopic = "__alerts";
inline constexpr std::string_view kAlertElectionTopic = "__alerts-leader";

struct AlertLeaderCallbacks {
  // The store's alerts keyspace took the leader's writes (on a replica
  // that does not lead): reload the alerter.
  std::function<void()> followed;
  // This replica took (true) or lost (false) the lead.
  std::function<void(bool)> leading;
};

class AlertLeader {
 public:
  // Kafka settings (brokers, security, group id) from the engine's options.
  // UNAVAILABLE when the topics cannot be created or read.
  // REQUIRES: store outlives the leader.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AlertLeader>> Start(const ingest::EngineOptions& kafka,
                                                                          state::Store* store,
                                                                          AlertLeaderCallbacks callbacks);
  ~AlertLeader();  // Stop()
  void Stop();     // leaves the election group; idempotent

  bool leader() const;
  // The leader's writes: one transaction on the state topic, then the
  // local store (under the lock the follower's tail writes under, so a
  // deposed leader's late write never lands after a newer leader's).
  // FAILED_PRECONDITION when this replica does not lead (or no longer
  // does: fenced by a newer leader, or its producer failed for good).
  [[nodiscard]] absl::Status Replicate(const std::vector<state::Store::AlertWrite>& writes);

  struct Stats {
    std::atomic<uint64_t> terms{0};       // times this replica took the lead
    std::atomic<uint64_t> replicated{0};  // writes the leader replicated
    std::atomic<uint64_t> followed{0};    // writes applied from the leader's topic
  };
  const Stats& stats() const;

  struct Rep;  // alert_leader.cc's

 private:
  explicit AlertLeader(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
