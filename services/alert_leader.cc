#include "services/alert_leader.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "ingest/changelog.h"
#include "ingest/kafka_conf.h"

namespace kpistream::services {

using Clock = std::chrono::steady_clock;

struct AlertLeader::Rep {
  ingest::EngineOptions kafka;
  state::Store* store = nullptr;
  AlertLeaderCallbacks callbacks;
  std::string state_topic;    // "<group>.alerts.changelog"
  std::string control_topic;  // "<group>.alerts-leader.changelog"
  Stats stats;

  rd_kafka_t* election = nullptr;
  std::unique_ptr<ingest::Changelog> reader;  // tails the state topic
  int64_t tail_next = 0;                      // the state topic's next offset to apply
  Clock::time_point last_tail{};
  Clock::time_point retry_at{};

  // Set by the rebalance callback (the election thread): the control
  // partition is assigned to this replica. Cleared by a revocation, and by
  // being fenced (so that a replica whose revocation is late does not take
  // the lead back from the new leader).
  std::atomic<bool> assigned{false};
  std::atomic<bool> is_leader{false};

  std::mutex mu;  // the producer, is_leader's transitions, and every write to the store's alerts
  std::unique_ptr<ingest::Changelog> producer;
  std::atomic<bool> fenced{false};            // Replicate's producer failed for good: Run steps down
  std::atomic<bool> followed_pending{false};  // Tail applied writes: Run calls `followed`

  std::atomic<bool> stop{false};
  std::thread thread;

  void Run();
  absl::Status Tail(bool notify);
  void TakeLead();
  void Resign(const char* why);
};

namespace {

// The cooperative protocol: only the partitions that move are named, so a
// replica joining or leaving never takes the lead from one that keeps it.
void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
  auto* rep = static_cast<AlertLeader::Rep*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    if (auto* e = rd_kafka_incremental_assign(rk, parts)) rd_kafka_error_destroy(e);
    if (parts->cnt > 0) rep->assigned = true;
  } else {
    if (auto* e = rd_kafka_incremental_unassign(rk, parts)) rd_kafka_error_destroy(e);
    if (parts->cnt > 0) rep->assigned = false;  // the one partition there is
  }
}

}  // namespace

absl::Status AlertLeader::Rep::Tail(bool notify) {
  std::vector<state::Store::AlertWrite> batch;
  // Under mu: a write a deposed leader makes to its own store (Replicate)
  // is never applied after a newer leader's writes read here.
  std::lock_guard<std::mutex> l(mu);
  auto r = reader->Restore(
      state_topic, 0, tail_next,
      [&](std::string_view key, std::string_view value, int64_t) {
        // A tombstone (empty value: alert records are never empty) deletes.
        batch.emplace_back(std::string(key),
                           value.empty() ? std::nullopt : std::optional<std::string>(std::string(value)));
        return absl::OkStatus();
      },
      30000);
  if (!r.ok()) return r.status();
  tail_next = r->next_offset;
  if (batch.empty()) return absl::OkStatus();
  if (auto st = store->WriteAlerts(batch); !st.ok()) return st;
  stats.followed.fetch_add(batch.size(), std::memory_order_relaxed);
  if (notify) followed_pending = true;  // the callback runs outside mu (Run)
  return absl::OkStatus();
}

void AlertLeader::Rep::TakeLead() {
  // The shared transactional id: initialising it fences the previous
  // leader's producer and ends its open transaction, so nothing it writes
  // from now on becomes visible; then everything it wrote is read.
  auto p = ingest::Changelog::Create(kafka, "." + std::string(kAlertStateTopic), 10000, /*shared_id=*/true);
  if (!p.ok()) {
    spdlog::warn("alerts: taking the lead: {}; retrying", p.status().ToString());
    retry_at = Clock::now() + std::chrono::seconds(1);
    return;
  }
  if (auto st = Tail(/*notify=*/false); !st.ok()) {
    spdlog::warn("alerts: taking the lead: reading {}: {}; retrying", state_topic, st.ToString());
    retry_at = Clock::now() + std::chrono::seconds(1);
    return;
  }
  // The alerter reloads everything read before it may evaluate (active()
  // turns true only below): its first round starts from the old leader's
  // last state. (Reload waits for a round in progress, whose replication
  // fails: this replica does not lead yet.)
  if (callbacks.followed) callbacks.followed();
  followed_pending = false;
  {
    std::lock_guard<std::mutex> l(mu);
    if (!assigned) return;  // revoked meanwhile
    producer = std::move(*p);
    is_leader = true;
  }
  stats.terms.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("alerts: this replica leads (it evaluates the rules and sends the alerts); state read to offset {}",
               tail_next);
  if (callbacks.leading) callbacks.leading(true);
}

void AlertLeader::Rep::Resign(const char* why) {
  {
    std::lock_guard<std::mutex> l(mu);
    if (!is_leader && !fenced) return;
    is_leader = false;
    fenced = false;
    producer.reset();
  }
  spdlog::info("alerts: this replica no longer leads ({})", why);
  if (callbacks.leading) callbacks.leading(false);
}

void AlertLeader::Rep::Run() {
  while (!stop) {
    if (rd_kafka_message_t* m = rd_kafka_consumer_poll(election, 200)) rd_kafka_message_destroy(m);
    if (stop) break;
    if (fenced) {
      // A newer leader fenced this one's producer, or its transaction
      // failed for good: step down; take the lead again only if the
      // election still gives it here after longer than its session
      // timeout (a replica really replaced has been revoked by then).
      Resign("its producer was fenced or failed");
      retry_at = Clock::now() + std::chrono::seconds(10);
    }
    const bool leading = is_leader;
    if (assigned && !leading && Clock::now() >= retry_at) {
      TakeLead();
    } else if (!assigned && leading) {
      Resign("the election moved the lead");
    }
    if (!is_leader && Clock::now() - last_tail >= std::chrono::milliseconds(500)) {
      last_tail = Clock::now();
      if (auto st = Tail(/*notify=*/true); !st.ok()) spdlog::warn("alerts: following the leader: {}", st.ToString());
    }
    if (followed_pending.exchange(false) && callbacks.followed) callbacks.followed();
  }
}

AlertLeader::AlertLeader(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
AlertLeader::~AlertLeader() { Stop(); }

absl::StatusOr<std::unique_ptr<AlertLeader>> AlertLeader::Start(const ingest::EngineOptions& kafka, state::Store* store,
                                                                AlertLeaderCallbacks callbacks) {
  auto rep = std::make_unique<Rep>();
  rep->kafka = kafka;
  rep->store = store;
  rep->callbacks = std::move(callbacks);
  rep->state_topic = kafka.group_id + "." + std::string(kAlertStateTopic) + ".changelog";
  rep->control_topic = kafka.group_id + "." + std::string(kAlertElectionTopic) + ".changelog";
  auto reader = ingest::Changelog::Create(kafka, ".alerts-follower");
  if (!reader.ok()) return reader.status();
  rep->reader = std::move(*reader);
  if (auto st = rep->reader->EnsureTopic(rep->state_topic, 1); !st.ok()) return st;
  // Only subscribed to, for the election: never written.
  if (auto st = rep->reader->EnsureTopic(rep->control_topic, 1, /*holds_state=*/false); !st.ok()) return st;
  // The election consumer: its own group, dynamic membership (a stop hands
  // the lead over at once), cooperative-sticky (a replica joining never
  // moves the lead), a short session (a killed leader is replaced within
  // 6 s).
  ingest::EngineOptions e = kafka;
  e.group_id = kafka.group_id + "." + std::string(kAlertElectionTopic);
  e.topics.clear();
  e.kafka_properties.erase("group.instance.id");
  e.kafka_properties["partition.assignment.strategy"] = "cooperative-sticky";
  e.kafka_properties["session.timeout.ms"] = "6000";
  e.kafka_properties["heartbeat.interval.ms"] = "1000";
  e.kafka_properties["auto.offset.reset"] = "latest";
  auto conf = ingest::ConsumerConf(e);
  if (!conf.ok()) return conf.status();
  ingest::RouteKafkaLogs(conf->get());
  rd_kafka_conf_set_opaque(conf->get(), rep.get());
  rd_kafka_conf_set_rebalance_cb(conf->get(), OnRebalance);
  char err[512];
  rep->election = rd_kafka_new(RD_KAFKA_CONSUMER, conf->release(), err, sizeof(err));
  if (!rep->election) return absl::InvalidArgumentError(fmt::format("alert leader election consumer: {}", err));
  rd_kafka_poll_set_consumer(rep->election);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, rep->control_topic.c_str(), RD_KAFKA_PARTITION_UA);
  const auto se = rd_kafka_subscribe(rep->election, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (se) {
    rd_kafka_destroy(rep->election);
    return absl::UnavailableError(
        fmt::format("alert leader election: subscribing to {}: {}", rep->control_topic, rd_kafka_err2str(se)));
  }
  // What the leaders wrote so far, before the alerter starts.
  if (auto st = rep->Tail(/*notify=*/false); !st.ok()) {
    rd_kafka_consumer_close(rep->election);
    rd_kafka_destroy(rep->election);
    return st;
  }
  Rep* r = rep.get();
  rep->thread = std::thread([r] { r->Run(); });
  return std::unique_ptr<AlertLeader>(new AlertLeader(std::move(rep)));
}

void AlertLeader::Stop() {
  if (rep_->stop.exchange(true)) return;
  if (rep_->thread.joinable()) rep_->thread.join();
  rep_->Resign("stopping");
  rd_kafka_consumer_close(rep_->election);  // leaves the group: another replica leads at once
  rd_kafka_destroy(rep_->election);
}

bool AlertLeader::leader() const { return rep_->is_leader; }

const AlertLeader::Stats& AlertLeader::stats() const { return rep_->stats; }

absl::Status AlertLeader::Replicate(const std::vector<state::Store::AlertWrite>& writes) {
  std::lock_guard<std::mutex> l(rep_->mu);
  if (!rep_->is_leader || !rep_->producer) {
    return absl::FailedPreconditionError("this replica does not lead the alerts");
  }
  auto& p = *rep_->producer;
  absl::Status st = p.Begin();
  for (size_t i = 0; st.ok() && i < writes.size(); ++i) {
    const auto& [key, value] = writes[i];
    st = p.Add(rep_->state_topic, 0, key, value ? std::string_view(*value) : std::string_view());
  }
  if (st.ok()) {
    auto c = p.Commit(nullptr, nullptr);
    st = c.status();
  } else {
    (void)p.Abort();
  }
  if (st.ok()) {
    rep_->stats.replicated.fetch_add(writes.size(), std::memory_order_relaxed);
    // Then the local store, still under mu (see Tail).
    return rep_->store->WriteAlerts(writes);
  }
  if (absl::IsAborted(st)) {
    // Fenced by a newer leader, or a transaction that can never commit:
    // this replica stops leading at once; Run steps down (the callback
    // runs there, not under mu).
    rep_->is_leader = false;
    rep_->fenced = true;
    spdlog::warn("alerts: this replica no longer leads: {}", st.ToString());
    return absl::FailedPreconditionError(fmt::format("no longer the alert leader: {}", std::string(st.message())));
  }
  return st;
}

}  // namespace kpistream::services
