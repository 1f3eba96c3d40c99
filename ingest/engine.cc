#include "ingest/engine.h"
#include "ingest/topic_match.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "ingest/accumulator.h"
#include "ingest/admission.h"
#include "ingest/changelog.h"
#include "ingest/dead_letter.h"
#include "ingest/high_watermarks.h"
#include "ingest/kafka_conf.h"
#include "ingest/router.h"
#include "state/keys.h"

namespace kpistream::ingest {

using Clock = std::chrono::steady_clock;

void LatencyHistogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void LatencyHistogram::Snapshot(std::vector<uint64_t>* cumulative, double* sum, uint64_t* count) const {
  cumulative->clear();
  uint64_t acc = 0;
  for (const auto& b : buckets_) {
    acc += b.load(std::memory_order_relaxed);
    cumulative->push_back(acc);
  }
  *sum = static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
  *count = acc;
}

std::vector<EngineProbe::PartitionLag> EngineProbe::Lags() const {
  std::lock_guard<std::mutex> l(mu);
  return lags_;
}
void EngineProbe::SetLags(std::vector<PartitionLag> lags) {
  std::lock_guard<std::mutex> l(mu);
  lags_ = std::move(lags);
}

namespace {

struct PartitionState {
  const TopicBinding* binding = nullptr;
  std::string changelog_topic;  // EngineOptions::changelog: its changelog
  std::unique_ptr<PartitionApplier> applier;
  // High watermark queried at assignment. librdkafka's cached watermark is
  // only refreshed by fetches, and after a re-assignment it can be the
  // stale one from before (a broker outage): lag must not read 0 then. It
  // is also the offset the partition must reach to be caught up.
  int64_t assigned_hi = -1;
  bool caught_up = false;
  // Stall watchdog: next offset when last seen moving, and when.
  int64_t progress_offset = -1;
  int64_t known_hi = -1;  // newest high watermark known (PublishLags)
  Clock::time_point progress_at{};
  // Held (Outcome::kHeld): paused and sought back to next_offset until
  // held_until; hold_ms is the current backoff, 0 once a record of the
  // partition went through again.
  bool held = false;
  int64_t hold_ms = 0;
  Clock::time_point held_until{};
};

}  // namespace

struct Engine::Rep {
  EngineOptions options;
  const kpi::Catalog& catalog;
  const kpi::StateIds& ids;
  state::Store* store;
  const state::Clock& clock;
  Router router;
  Accumulator acc;
  ApplyScratch scratch;
  EngineProbe probe;
  ApplyContext ctx;
  std::vector<CommitListener> listeners;

  rd_kafka_t* consumer = nullptr;
  bool ever_assigned = false;  // an assignment arrived (consumer thread)
  std::unique_ptr<DeadLetterQueue> dlq;
  std::unique_ptr<TopicMatcher> topics;       // which binding a topic's records are read by
  std::unique_ptr<Changelog> changelog;       // EngineOptions::changelog
  std::unique_ptr<Changelog> ship_changelog;  // ShipWholeSource's long transactions, made when needed
  std::unique_ptr<ChangelogCodec> codec;
  std::unordered_map<uint64_t, TopicPartition> source_partitions;  // owned sources: their input partition
  // The expiry sweep (EngineOptions::changelog_sweep_interval_ms): the
  // sources the pass under way has yet to finish, with where each stopped.
  std::map<uint64_t, state::Store::ExpiryCursor> sweep_pending;
  Clock::time_point next_sweep{};
  // Sources this replica shipped to a changelog before a restart, marked
  // for expiry by sweep until the first assignment says which it owns.
  std::vector<uint64_t> premarked;
  // Engine::Owned(), published by the consumer thread.
  mutable std::mutex ownership_mu;
  std::map<TopicPartition, uint64_t> published_owned ABSL_GUARDED_BY(ownership_mu);
  std::map<std::string, int32_t> partition_counts ABSL_GUARDED_BY(ownership_mu);  // input topics
  std::atomic<uint64_t> ownership_epoch{0};
  Clock::time_point counts_refreshed_at{};
  // The group's committed (stable) offsets of the partitions being assigned
  // (WaitStableOffsets); the last changelog transaction committed them.
  std::map<TopicPartition, int64_t> group_committed;
  std::unordered_map<std::string, uint32_t> topic_ids;  // state ids of the topics seen, by name
  // Owned by the consumer thread.
  std::map<TopicPartition, PartitionState> owned;
  bool any_held = false;                                        // some partition is held (Hold): ResumeHeld has work
  Clock::time_point next_resume_at = Clock::time_point::max();  // the earliest held_until
  int64_t total_lag = 0;                                        // records waiting in Kafka, as of the last commit

  std::thread thread;
  std::atomic<bool> stop{false};
  // High watermarks asked of the partition leaders (PublishLags), while
  // running.
  std::unique_ptr<HighWatermarkProbe> hw;
  std::atomic<bool> ready{false};
  std::atomic<bool> caught_up{false};
  std::atomic<bool> replaying{false};
  std::atomic<bool> blocked{false};
  bool brokers_suspect = false;  // a connection failed: probe the cluster
  std::atomic<bool> brokers_down{false};
  Clock::time_point last_broker_probe{};
  std::atomic<bool> started{false};
  mutable std::mutex fatal_mu;
  std::optional<absl::Status> fatal ABSL_GUARDED_BY(fatal_mu);

  Rep(const EngineOptions& o, const kpi::Catalog& c, const kpi::StateIds& i, state::Store* s, const state::Clock& clk)
      : options(o), catalog(c), ids(i), store(s), clock(clk), router(c), acc(c, i), scratch(o.decoder), probe(c) {
    ctx.catalog = &catalog;
    ctx.ids = &ids;
    ctx.store = store;
    ctx.router = &router;
    ctx.options.dedup_window_ms = options.dedup_window_ms;
    ctx.options.max_future_ms = options.max_future_ms;
    ctx.stats = &probe.ingest;
  }

  ~Rep() {
    dlq.reset();
    if (!consumer) return;
    // librdkafka before 2.3.0 aborts (assert in
    // rd_kafka_sticky_assignor_state_destroy) when a cooperative-sticky
    // consumer is destroyed before its first assignment:
    // confluentinc/librdkafka#4312, fixed by #4381 in 2.3.0. Debian
    // bookworm ships 2.0.2. Such a consumer (stopped while it was still
    // joining: a SIGTERM or a reload at start, a broker that never
    // answered) has already left the group (rd_kafka_consumer_close); its
    // handle is left to the process instead of aborting it.
    if (!ever_assigned && rd_kafka_version() < 0x020300ff) {
      spdlog::warn(
          "kafka: the consumer stopped before its first assignment; its handle is not destroyed "
          "(librdkafka {} would abort: confluentinc/librdkafka#4312)",
          rd_kafka_version_str());
      // Kept reachable, so leak checkers see a deliberate handle, not a loss.
      static auto* const kept = new std::vector<rd_kafka_t*>();
      static std::mutex kept_mu;
      std::lock_guard<std::mutex> l(kept_mu);
      kept->push_back(consumer);
      return;
    }
    rd_kafka_destroy(consumer);
  }

  void SetFatal(absl::Status s) {
    spdlog::critical("{}", s.ToString());
    std::lock_guard<std::mutex> l(fatal_mu);
    if (!fatal) fatal = std::move(s);
    ready = false;
    stop = true;
  }

  absl::Status Init();
  void Run();
  void Handle(rd_kafka_message_t* m);
  bool Commit(bool force);
  void OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts);
  void Assign(rd_kafka_topic_partition_list_t* parts);
  bool AssignOne(rd_kafka_topic_partition_t* p, const TopicBinding* binding);
  bool WaitStableOffsets(rd_kafka_topic_partition_list_t* parts);
  absl::Status RestoreChangelog(const std::string& topic, int32_t partition, uint64_t source,
                                const std::string& changelog_topic);
  absl::Status ShipWholeSource(const std::string& topic, int32_t partition, uint64_t source,
                               const std::string& changelog_topic);
  absl::Status CommitChangelog(state::WriteBatch* batch,
                               const std::vector<std::pair<const TopicPartition*, PartitionState*>>& moved);
  void CollectExpired(state::WriteBatch* batch, std::vector<std::pair<const TopicPartition*, PartitionState*>>* swept);
  void Revoke(rd_kafka_topic_partition_list_t* parts);
  void ResetToStored();
  void PublishLags();
  void SetHighWatermarkPartitions();
  void StepOverUnreadOffsets();
  void CheckStalls(Clock::time_point now);
  void Hold(const TopicPartition& tp, PartitionState* ps, const std::string& why);
  void ResumeHeld(Clock::time_point now);
  void SetPaused(bool paused);
  void PublishNewest(const PartitionApplier& a);
  void PublishOwnership();
  void RefreshPartitionCounts(Clock::time_point now);
  void ProbeBrokers();
  void OnClientError(rd_kafka_resp_err_t err, const char* reason);
  bool SkipToLogStart(const std::string& topic, int32_t partition);
  bool SeekOne(const std::string& topic, int32_t partition, int64_t offset);
  size_t PendingBytes() const {
    size_t ids_pending = 0;
    for (const auto& [tp, ps] : owned) ids_pending += ps.applier->pending_ids();
    return acc.ApproxBytes() + ids_pending * PartitionApplier::kPendingIdBytes;
  }
  void UpdateReady() {
    ready = !owned.empty() && !blocked && !brokers_down && !stop;
    bool all = true;
    for (const auto& [tp, ps] : owned) all = all && ps.caught_up;
    // A backlog built up after catching up (a slow spell, a burst) is a
    // replay too: the state is behind what Kafka holds.
    const bool behind = !all || total_lag > options.catchup_lag_records;
    replaying = behind;
    caught_up = ready && !behind;
  }
};

absl::Status Engine::Rep::Init() {
  if (options.topics.empty()) return absl::InvalidArgumentError("no input topics configured");
  auto matcher = TopicMatcher::Create(options.topics, options.dlq_topic, options.group_id);
  if (!matcher.ok()) return matcher.status();
  topics = std::move(*matcher);

  char err[512];
  auto cconf = ConsumerConf(options);
  if (!cconf.ok()) return cconf.status();
  rd_kafka_conf_set_opaque(cconf->get(), this);
  // Client-level errors (brokers unreachable, ...) arrive here, on the
  // consumer thread (rd_kafka_poll_set_consumer routes the main queue to it).
  rd_kafka_conf_set_error_cb(cconf->get(), [](rd_kafka_t*, int err, const char* reason, void* opaque) {
    static_cast<Rep*>(opaque)->OnClientError(static_cast<rd_kafka_resp_err_t>(err), reason);
  });
  rd_kafka_conf_set_rebalance_cb(
      cconf->get(), [](rd_kafka_t*, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t* parts, void* opaque) {
        static_cast<Rep*>(opaque)->OnRebalance(e, parts);
      });
  consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf->release(), err, sizeof(err));
  if (!consumer) return absl::InvalidArgumentError(fmt::format("creating Kafka consumer: {}", err));
  rd_kafka_poll_set_consumer(consumer);

  auto pconf = ProducerConf(options);
  if (!pconf.ok()) return pconf.status();
  auto dead_letters =
      DeadLetterQueue::Create(std::move(*pconf), options.dlq_topic, options.dlq_max_payload_bytes, &probe);
  if (!dead_letters.ok()) return dead_letters.status();
  dlq = std::move(*dead_letters);

  if (options.changelog) {
    auto cl = Changelog::Create(options);
    if (!cl.ok()) return cl.status();
    changelog = std::move(*cl);
    codec = std::make_unique<ChangelogCodec>(catalog, ids, store);
    next_sweep =
        Clock::now() + std::min<std::chrono::milliseconds>(
                           std::chrono::minutes(1),
                           std::chrono::milliseconds(std::max<int64_t>(1000, options.changelog_sweep_interval_ms)));
    // Until the group assigns partitions, the compaction filters must not
    // drop expired keys of a partition this replica may own again: its
    // changelog would never see them go.
    auto sources = store->ListOffsets();
    if (!sources.ok()) return sources.status();
    for (const auto& [source, offset] : *sources) {
      auto recorded = store->ReadChangelogOffset(source);
      if (!recorded.ok()) return recorded.status();
      if (!recorded->has_value()) continue;
      store->SetExpiryBySweep(source, true);
      premarked.push_back(source);
    }
  }

  rd_kafka_topic_partition_list_t* subs = rd_kafka_topic_partition_list_new(static_cast<int>(options.topics.size()));
  for (const auto& b : options.topics) rd_kafka_topic_partition_list_add(subs, b.topic.c_str(), RD_KAFKA_PARTITION_UA);
  const auto e = rd_kafka_subscribe(consumer, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (e) return absl::InternalError(fmt::format("subscribing: {}", rd_kafka_err2str(e)));
  return absl::OkStatus();
}

void Engine::Rep::OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
  probe.rebalances.fetch_add(1);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    ever_assigned = true;
    Assign(parts);
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    Revoke(parts);
  } else {
    spdlog::error("rebalance error: {}", rd_kafka_err2str(err));
    Revoke(parts);
  }
  UpdateReady();
}

// Restores one assigned partition's applier and sets where consumption
// starts (p->offset). False after a fatal error.
bool Engine::Rep::AssignOne(rd_kafka_topic_partition_t* p, const TopicBinding* binding) {
  PartitionState ps;
  ps.binding = binding;
  // A topic's state id is fixed on first sight and persisted, whether it is
  // named or matched by a pattern.
  auto tid = topic_ids.find(p->topic);
  if (tid == topic_ids.end()) {
    auto id = store->IdFor("topic", p->topic);
    if (!id.ok()) {
      SetFatal(absl::Status(id.status().code(),
                            fmt::format("a state id for topic {}: {}", p->topic, std::string(id.status().message()))));
      return false;
    }
    tid = topic_ids.emplace(p->topic, *id).first;
  }
  const uint64_t source = state::SourceId(tid->second, p->partition);
  if (changelog) {
    ps.changelog_topic = ChangelogTopic(options.group_id, p->topic);
    // Before the restore: what it brings back past retention is deleted
    // by the sweep, with tombstones, not dropped by compaction unseen.
    store->SetExpiryBySweep(source, true);
    if (auto st = RestoreChangelog(p->topic, p->partition, source, ps.changelog_topic); !st.ok()) {
      SetFatal(absl::Status(st.code(), fmt::format("restoring {}[{}] from its changelog: {}", p->topic, p->partition,
                                                   std::string(st.message()))));
      return false;
    }
  }
  auto applier = PartitionApplier::Restore(ctx, source, binding->family, binding->format, clock.NowMs(),
                                           binding->mapping.get(), p->topic);
  if (!applier.ok()) {
    SetFatal(absl::Status(applier.status().code(), fmt::format("restoring {}[{}]: {}", p->topic, p->partition,
                                                               std::string(applier.status().message()))));
    return false;
  }
  ps.applier = std::move(*applier);
  int64_t lo = 0, hi = 0;
  const auto we = rd_kafka_query_watermark_offsets(consumer, p->topic, p->partition, &lo, &hi, 10000);
  if (we == RD_KAFKA_RESP_ERR_NO_ERROR) ps.assigned_hi = hi;
  if (const auto committed = ps.applier->committed_offset()) {
    int64_t next = *committed;
    if (we == RD_KAFKA_RESP_ERR_NO_ERROR && *committed < lo) {
      if (!options.accept_lost_records) {
        SetFatal(absl::FailedPreconditionError(fmt::format(
            "{}[{}]: the stored offset {} is below the log start {}: records {}..{} were deleted by retention "
            "while kpid was not consuming, so the KPIs cannot be exact. kpid will not skip them silently: "
            "restore the records; or restart with --accept-lost-records to continue from the log start (KPIs "
            "over windows that held those {} records stay short of them); or start with a fresh --state-dir to "
            "recompute the KPIs from what Kafka still holds",
            p->topic, p->partition, *committed, lo, *committed, lo - 1, lo - *committed)));
        return false;
      }
      spdlog::error(
          "{}[{}]: records {}..{} ({}) were deleted before kpid applied them; continuing from the log "
          "start as --accept-lost-records asks (counted in kpistream_records_lost_total)",
          p->topic, p->partition, *committed, lo - 1, lo - *committed);
      probe.lost_records.fetch_add(static_cast<uint64_t>(lo - *committed));
      next = lo;  // the committed offset stays behind, so the next commit records the jump
    }
    ps.applier->SkipTo(next);
    p->offset = next;
    // What was committed before a restart counts as applied (absence and
    // freshness alerts, the event-time alert clock).
    PublishNewest(*ps.applier);
  } else {
    ps.applier->SkipTo(we == RD_KAFKA_RESP_ERR_NO_ERROR ? lo : 0);
    p->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  ps.caught_up = ps.assigned_hi < 0 || ps.applier->next_offset() >= ps.assigned_hi;
  spdlog::info("assigned {}[{}] from offset {}", p->topic, p->partition,
               ps.applier->committed_offset() ? fmt::format("{} (stored)", *ps.applier->committed_offset())
                                              : std::string("beginning"));
  source_partitions[source] = {p->topic, p->partition};
  owned[{p->topic, p->partition}] = std::move(ps);
  return true;
}

void Engine::Rep::Assign(rd_kafka_topic_partition_list_t* parts) {
  // Not ready while restoring (readiness keeps a restoring replica out of
  // the Service); UpdateReady runs after the rebalance.
  if (changelog) ready = false;
  if (changelog && !WaitStableOffsets(parts)) return;
  for (int i = 0; i < parts->cnt; ++i) {
    auto& p = parts->elems[i];
    const TopicBinding* binding = topics->Find(p.topic);
    if (!binding) continue;
    if (!AssignOne(&p, binding)) return;
  }
  rd_kafka_error_t* e = nullptr;
  if (std::strcmp(rd_kafka_rebalance_protocol(consumer), "COOPERATIVE") == 0) {
    e = rd_kafka_incremental_assign(consumer, parts);
  } else {
    const auto ae = rd_kafka_assign(consumer, parts);
    if (ae) spdlog::error("assign: {}", rd_kafka_err2str(ae));
  }
  if (e) {
    spdlog::error("incremental assign: {}", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
  }
  for (uint64_t source : premarked) {
    if (!source_partitions.count(source)) store->SetExpiryBySweep(source, false);  // a warm copy: the filters'
  }
  premarked.clear();
  probe.assigned_partitions = static_cast<int64_t>(owned.size());
  SetHighWatermarkPartitions();
  PublishOwnership();
}

void Engine::Rep::Revoke(rd_kafka_topic_partition_list_t* parts) {
  if (!Commit(true)) {
    // The partials could not be persisted: forget them, the next owner (or
    // we, on re-assignment) replays from the stored offsets.
    ResetToStored();
  }
  for (int i = 0; i < parts->cnt; ++i) {
    if (auto it = owned.find({parts->elems[i].topic, parts->elems[i].partition});
        it != owned.end() && (it->second.held || blocked)) {
      // Clears the pause (a hold's, or the global one while blocked):
      // librdkafka keeps it across unassign, so a later assignment would
      // never fetch the partition.
      rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(l, parts->elems[i].topic, parts->elems[i].partition);
      rd_kafka_resume_partitions(consumer, l);
      rd_kafka_topic_partition_list_destroy(l);
    }
    if (auto it = owned.find({parts->elems[i].topic, parts->elems[i].partition}); it != owned.end()) {
      const uint64_t source = it->second.applier->source();
      source_partitions.erase(source);
      sweep_pending.erase(source);
      // A warm copy now: its expired keys go by compaction, as the new
      // owner tombstones them in the changelog.
      if (changelog) store->SetExpiryBySweep(source, false);
    }
    owned.erase({parts->elems[i].topic, parts->elems[i].partition});
    spdlog::info("revoked {}[{}]", parts->elems[i].topic, parts->elems[i].partition);
  }
  if (std::strcmp(rd_kafka_rebalance_protocol(consumer), "COOPERATIVE") == 0) {
    if (auto* e = rd_kafka_incremental_unassign(consumer, parts)) {
      spdlog::error("incremental unassign: {}", rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
  } else {
    rd_kafka_assign(consumer, nullptr);
  }
  probe.assigned_partitions = static_cast<int64_t>(owned.size());
  SetHighWatermarkPartitions();
  PublishOwnership();
}

void Engine::Rep::PublishOwnership() {
  std::map<TopicPartition, uint64_t> now;
  for (const auto& [tp, ps] : owned) now[tp] = ps.applier->source();
  // The epoch moves under the lock that publishes: Owned() reads both at once.
  std::lock_guard<std::mutex> l(ownership_mu);
  published_owned = std::move(now);
  ownership_epoch.fetch_add(1);
}

// The partition count of every input topic (named or matched), from the
// cluster's metadata: what Engine::Owned() lists as missing. Consumer
// thread, every 10 s, with changelogs only (one replica owns everything).
void Engine::Rep::RefreshPartitionCounts(Clock::time_point now) {
  if (!changelog || brokers_down || now - counts_refreshed_at < std::chrono::seconds(10)) return;
  counts_refreshed_at = now;
  const struct rd_kafka_metadata* md = nullptr;
  if (rd_kafka_metadata(consumer, 1, nullptr, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
  std::map<std::string, int32_t> counts;
  for (int i = 0; i < md->topic_cnt; ++i) {
    const auto& t = md->topics[i];
    if (!t.err && topics->Find(t.topic)) counts[t.topic] = t.partition_cnt;
  }
  rd_kafka_metadata_destroy(md);
  std::lock_guard<std::mutex> l(ownership_mu);
  if (counts == partition_counts) return;
  partition_counts = std::move(counts);
  ownership_epoch.fetch_add(1);
}

namespace {

// The source a key of a source-scoped keyspace belongs to (state/keys.h).
std::optional<uint64_t> SourceOfKey(state::Keyspace keyspace, std::string_view key) {
  switch (keyspace) {
    case state::Keyspace::kAgg: {
      state::AggKeyParts parts;
      if (!state::ParseAggKey(key, &parts)) return std::nullopt;
      return parts.source;
    }
    case state::Keyspace::kOffsets:
    case state::Keyspace::kEventIds:
      if (key.size() < 8) return std::nullopt;
      return state::GetU64BE(key.data());
    case state::Keyspace::kGroups:
      if (key.size() < 9) return std::nullopt;
      return state::GetU64BE(key.data() + 1);
    default:
      return std::nullopt;
  }
}

}  // namespace

// Before restoring from a changelog: wait until no transaction of a
// previous owner is pending on these input partitions (a read_committed
// consumer's committed-offsets request asks for stable offsets, KIP-447).
// A previous owner's commit then either landed in the changelog or never
// will, so the changelog's end is final. False after a fatal error.
bool Engine::Rep::WaitStableOffsets(rd_kafka_topic_partition_list_t* parts) {
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_copy(parts);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
  bool stable = false;
  for (bool first = true; !stable && !stop && Clock::now() < deadline; first = false) {
    if (!first) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    last = rd_kafka_committed(consumer, l, 10000);
    if (last == RD_KAFKA_RESP_ERR_NO_ERROR) {
      stable = true;
      for (int i = 0; i < l->cnt; ++i) {
        if (l->elems[i].err) {
          last = l->elems[i].err;
          stable = false;
        }
      }
    }
  }
  if (stable) {
    for (int i = 0; i < l->cnt; ++i) group_committed[{l->elems[i].topic, l->elems[i].partition}] = l->elems[i].offset;
  }
  rd_kafka_topic_partition_list_destroy(l);
  if (stable || stop) return stable;
  SetFatal(absl::UnavailableError(fmt::format(
      "a previous owner's transaction on the assigned partitions did not resolve in 60 s ({}); its changelog "
      "cannot be restored exactly yet",
      rd_kafka_err2str(last))));
  return false;
}

absl::Status Engine::Rep::RestoreChangelog(const std::string& topic, int32_t partition, uint64_t source,
                                           const std::string& changelog_topic) {
  // As many changelog partitions as input partitions.
  int partitions = 0;
  {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(consumer, topic.c_str(), nullptr);
    const struct rd_kafka_metadata* md = nullptr;
    const auto e = rd_kafka_metadata(consumer, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (e) return absl::UnavailableError(fmt::format("metadata of {}: {}", topic, rd_kafka_err2str(e)));
    if (md->topic_cnt == 1 && !md->topics[0].err) partitions = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
  }
  if (partitions <= partition) {
    return absl::UnavailableError(fmt::format("metadata of {} does not list partition {}", topic, partition));
  }
  {
    // Known from now on: what answers list as missing (Engine::Owned).
    std::lock_guard<std::mutex> l(ownership_mu);
    partition_counts[topic] = partitions;
  }
  if (auto st = changelog->EnsureTopic(changelog_topic, partitions); !st.ok()) return st;
  auto bounds = changelog->Bounds(changelog_topic, partition);
  if (!bounds.ok()) return bounds.status();
  const auto [lo, hi] = *bounds;
  auto local = store->ReadChangelogOffset(source);
  if (!local.ok()) return local.status();
  auto stored = store->ReadOffset(source);
  if (!stored.ok()) return stored.status();
  int64_t from = lo;
  if (local->has_value() && **local >= lo && **local <= hi) {
    from = **local;  // this replica's own copy (a restart, a partition coming back): the tail since
  } else if (lo == hi && stored->has_value()) {
    // An empty changelog and state here: the changelog is new (changelogs
    // just turned on, or the topic recreated). Ship the whole state once.
    return ShipWholeSource(topic, partition, source, changelog_topic);
  } else if (stored->has_value() || local->has_value()) {
    // A copy not made from this changelog: the changelog is the truth.
    if (auto st = store->DropSource(source); !st.ok()) return st;
  }
  const auto t0 = Clock::now();
  auto restored = RestoreInto(*changelog, *codec, store, changelog_topic, partition, from, source);
  if (!restored.ok()) return restored.status();
  // The group's stable offset was committed by the last changelog
  // transaction, but the transaction's marker on the changelog partition
  // may land a moment after the one on the group's offsets (another
  // broker): until the restored offsets record has caught up with the
  // group's offset, read the tail again.
  if (auto committed = group_committed.find({topic, partition});
      committed != group_committed.end() && committed->second >= 0) {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto pos = store->ReadOffset(source);
      if (!pos.ok()) return pos.status();
      if (!pos->has_value() || (*pos)->next_offset >= committed->second) break;
      if (Clock::now() > deadline) {
        return absl::UnavailableError(
            fmt::format("the changelog ends at input offset {} but the group committed {}: the last transaction is not "
                        "readable after 30 s",
                        (*pos)->next_offset, committed->second));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto tail = RestoreInto(*changelog, *codec, store, changelog_topic, partition, restored->next_offset, source);
      if (!tail.ok()) return tail.status();
      restored->records += tail->records;
      restored->bytes += tail->bytes;
      restored->next_offset = tail->next_offset;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  probe.restores.fetch_add(1);
  probe.restored_records.fetch_add(restored->records);
  probe.restored_bytes.fetch_add(restored->bytes);
  probe.restore_latency.Observe(seconds);
  spdlog::info("{}[{}]: restored {} records ({} bytes) from {} offsets {}..{} in {:.3f} s", topic, partition,
               restored->records, restored->bytes, changelog_topic, from, restored->next_offset, seconds);
  return absl::OkStatus();
}

// Writes every key of a source to its changelog in one transaction (with
// its input offset), and records where the changelog now ends.
absl::Status Engine::Rep::ShipWholeSource(const std::string& topic, int32_t partition, uint64_t source,
                                          const std::string& changelog_topic) {
  auto stored = store->ReadOffset(source);
  if (!stored.ok()) return stored.status();
  // One transaction (a restore must never find partials without their
  // offsets record), which may take long for a large state: a producer of
  // its own with Kafka's longest default transaction timeout (15 min).
  if (!ship_changelog) {
    auto c = Changelog::Create(options, ".ship", 900000);
    if (!c.ok()) return c.status();
    ship_changelog = std::move(*c);
  }
  Changelog* changelog = ship_changelog.get();
  if (auto st = changelog->Begin(); !st.ok()) return st;
  absl::Status add;
  uint64_t n = 0;
  std::string portable;
  auto st = store->ScanSource(source, [&](state::Keyspace ks, std::string_view key, std::string_view value) {
    if (!add.ok() || !codec->Encode(ks, key, &portable)) return;
    add = changelog->Add(changelog_topic, partition, portable, value);
    ++n;
  });
  if (st.ok()) st = add;
  if (!st.ok()) {
    if (auto a = changelog->Abort(); !a.ok()) return a;
    return st;
  }
  rd_kafka_topic_partition_list_t* offs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(offs, topic.c_str(), partition)->offset = (*stored)->next_offset;
  auto next = changelog->Commit(consumer, offs);
  rd_kafka_topic_partition_list_destroy(offs);
  if (!next.ok()) return next.status();
  state::WriteBatch batch(*store);
  auto it = next->find({changelog_topic, partition});
  if (it == next->end()) return absl::InternalError("the changelog transaction wrote nothing");
  batch.PutChangelogOffset(source, it->second);
  probe.changelog_records.fetch_add(n);
  spdlog::info("{}[{}]: wrote the whole state ({} records) to the new changelog {}", topic, partition, n,
               changelog_topic);
  return store->Commit(&batch);
}

// The changelog transaction of a commit: rewrites *batch to full values,
// ships them, and adds each changed source's new changelog offset to it.
absl::Status Engine::Rep::CommitChangelog(state::WriteBatch* batch,
                                          const std::vector<std::pair<const TopicPartition*, PartitionState*>>& moved) {
  if (auto st = changelog->Begin(); !st.ok()) {
    probe.changelog_failures.fetch_add(1);
    return st;
  }
  absl::Status add;
  uint64_t n = 0, tombstones = 0;
  std::string portable;
  auto st = store->ResolveChanges(batch, [&](state::Keyspace ks, std::string_view key, std::string_view value) {
    if (!add.ok()) return;
    const auto source = SourceOfKey(ks, key);
    auto sp = source ? source_partitions.find(*source) : source_partitions.end();
    if (sp == source_partitions.end()) {
      add = absl::InternalError("a committed key of a partition this replica does not own");
      return;
    }
    if (!codec->Encode(ks, key, &portable)) return;
    add = changelog->Add(owned.at(sp->second).changelog_topic, sp->second.partition, portable, value);
    ++n;
    if (value.data() == nullptr) ++tombstones;
  });
  if (st.ok()) st = add;
  if (!st.ok()) {
    probe.changelog_failures.fetch_add(1);
    if (auto a = changelog->Abort(); !a.ok()) return a;
    return st;
  }
  rd_kafka_topic_partition_list_t* offs = rd_kafka_topic_partition_list_new(static_cast<int>(moved.size()));
  for (const auto& [tp, ps] : moved) {
    rd_kafka_topic_partition_list_add(offs, tp->topic.c_str(), tp->partition)->offset = ps->applier->next_offset();
  }
  auto next = changelog->Commit(consumer, offs);
  rd_kafka_topic_partition_list_destroy(offs);
  if (!next.ok()) {
    probe.changelog_failures.fetch_add(1);
    return next.status();
  }
  for (const auto& [tp, ps] : moved) {
    if (auto it = next->find({ps->changelog_topic, tp->partition}); it != next->end()) {
      batch->PutChangelogOffset(ps->applier->source(), it->second);
    }
  }
  probe.changelog_records.fetch_add(n, std::memory_order_relaxed);
  probe.changelog_tombstones.fetch_add(tombstones, std::memory_order_relaxed);
  return absl::OkStatus();
}

// The expiry sweep: starts a pass over the owned partitions when one is
// due, and adds to *batch the deletes of up to 20,000 expired keys (reading
// up to 200,000) of the pass's partitions (Store::CollectExpired). The
// partitions it touched that have nothing else to commit go to *swept: the
// commit's changelog transaction then carries their tombstones, with their
// (unchanged) input offsets so that a fenced replica cannot write them
// either. A partition whose collection fails is logged and left to the
// next pass (the deletes it added still ship, with its offset).
void Engine::Rep::CollectExpired(state::WriteBatch* batch,
                                 std::vector<std::pair<const TopicPartition*, PartitionState*>>* swept) {
  const auto now = Clock::now();
  if (sweep_pending.empty()) {
    if (now < next_sweep) return;
    next_sweep = now + std::chrono::milliseconds(std::max<int64_t>(1000, options.changelog_sweep_interval_ms));
    for (const auto& [tp, ps] : owned) {
      if (ps.applier->committed_offset()) sweep_pending[ps.applier->source()];
    }
  }
  // Per commit: at most this many deletes (tombstones in one transaction)
  // and keys read (the consumer thread's time).
  state::Store::ExpiryLimits budget{.deletes = 20000, .visits = 200000};
  size_t deleted = 0;
  for (auto it = sweep_pending.begin(); it != sweep_pending.end() && budget.deletes > 0 && budget.visits > 0;) {
    auto sp = source_partitions.find(it->first);
    if (sp == source_partitions.end()) {
      it = sweep_pending.erase(it);
      continue;
    }
    state::Store::ExpiryProgress progress;
    const auto st = store->CollectExpired(it->first, budget, &it->second, batch, &progress);
    budget.deletes -= progress.deleted;
    budget.visits -= std::min(budget.visits, progress.visited);
    deleted += progress.deleted;
    if (progress.deleted > 0) {
      // Deletes in the batch ship with the partition's input offset.
      auto o = owned.find(sp->second);
      if (!o->second.applier->dirty()) swept->emplace_back(&o->first, &o->second);
    }
    if (!st.ok()) {
      // This partition waits for the next pass; the others go on.
      spdlog::warn("expiry sweep of {}[{}]: {}; retried in the next pass", sp->second.topic, sp->second.partition,
                   st.ToString());
      it = sweep_pending.erase(it);
      continue;
    }
    it = progress.done ? sweep_pending.erase(it) : std::next(it);
  }
  if (deleted > 0) spdlog::debug("expiry sweep: {} expired keys deleted in this commit", deleted);
}

void Engine::Rep::ResetToStored() {
  acc.Clear();
  for (auto& [tp, ps] : owned) {
    if (auto st = ps.applier->Rewind(); !st.ok()) SetFatal(st);
  }
  rd_kafka_topic_partition_list_t* seeks = rd_kafka_topic_partition_list_new(static_cast<int>(owned.size()));
  for (auto& [tp, ps] : owned) {
    auto* e = rd_kafka_topic_partition_list_add(seeks, tp.topic.c_str(), tp.partition);
    e->offset = ps.applier->committed_offset().value_or(RD_KAFKA_OFFSET_BEGINNING);
  }
  if (seeks->cnt > 0) {
    if (auto* err = rd_kafka_seek_partitions(consumer, seeks, 10000)) {
      spdlog::error("seek back to stored offsets: {}", rd_kafka_error_string(err));
      rd_kafka_error_destroy(err);
    }
  }
  rd_kafka_topic_partition_list_destroy(seeks);
}

void Engine::Rep::Handle(rd_kafka_message_t* m) {
  if (m->err) {
    if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET || m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
      if (options.accept_lost_records && m->rkt && SkipToLogStart(rd_kafka_topic_name(m->rkt), m->partition)) return;
      SetFatal(absl::FailedPreconditionError(
          fmt::format("{}[{}]: offset out of range ({}): the records kpid needs next no longer exist in Kafka "
                      "(deleted by retention). kpid will not skip them silently: restore the records; or restart "
                      "with --accept-lost-records to continue from the log start; or start with a fresh "
                      "--state-dir to recompute the KPIs from what Kafka still holds",
                      m->rkt ? rd_kafka_topic_name(m->rkt) : "?", m->partition, rd_kafka_message_errstr(m))));
      return;
    }
    spdlog::warn("consumer: {}", rd_kafka_message_errstr(m));
    return;
  }
  auto it = owned.find({rd_kafka_topic_name(m->rkt), m->partition});
  if (it == owned.end()) return;  // not ours (anymore)
  PartitionState& ps = it->second;
  // A held partition's records are read again from next_offset when the
  // hold ends; what was fetched before the pause took effect is dropped.
  if (ps.held) return;
  // Recently held: the first record back must be the held one (it exists:
  // it was delivered before). A later one means the seek back did not take
  // effect; hold again rather than skip the held record.
  if (ps.hold_ms > 0 && m->offset > ps.applier->next_offset()) {
    spdlog::warn("{}[{}]: offset {} arrived after the hold instead of {}; seeking back", it->first.topic, m->partition,
                 m->offset, ps.applier->next_offset());
    Hold(it->first, &ps, "the seek back did not take effect");
    return;
  }
  PartitionApplier::Rejection rej;
  rd_kafka_timestamp_type_t ts_type;
  const int64_t timestamp_ms = rd_kafka_message_timestamp(m, &ts_type);
  const auto outcome = ps.applier->Apply(std::string_view(static_cast<const char*>(m->payload), m->len), m->offset,
                                         clock.NowMs(), &scratch, &acc, &rej, timestamp_ms);
  if (outcome != PartitionApplier::Outcome::kHeld) ps.hold_ms = 0;
  switch (outcome) {
    case PartitionApplier::Outcome::kApplied:
    case PartitionApplier::Outcome::kSkipped:
      break;
    case PartitionApplier::Outcome::kRejected:
      dlq->Send(m, it->first.topic, rej);  // the record's own topic (a binding's may be a pattern)
      break;
    case PartitionApplier::Outcome::kHeld:
      Hold(it->first, &ps, rej.detail);
      break;
    case PartitionApplier::Outcome::kUnknown:
      // The store could not say whether this event was applied: apply
      // nothing more, rewind to the durable state and retry with backoff.
      ResetToStored();
      blocked = true;
      SetPaused(true);
      UpdateReady();
      break;
  }
}

// A record of the partition cannot be decoded yet, through no fault of its
// own (the schema registry did not answer): pause the partition alone and
// seek it back to that record; ResumeHeld reads it again after a backoff
// of 250 ms doubling to 10 s. The other partitions go on, and what this
// one applied before the record stays (next_offset is the record's).
void Engine::Rep::Hold(const TopicPartition& tp, PartitionState* ps, const std::string& why) {
  ps->hold_ms = ps->hold_ms == 0 ? 250 : std::min<int64_t>(ps->hold_ms * 2, 10000);
  if (ps->hold_ms == 250) {
    spdlog::warn("{}[{}] offset {}: {}; holding the partition, retrying with backoff", tp.topic, tp.partition,
                 ps->applier->next_offset(), why);
  }
  ps->held = true;
  any_held = true;
  ps->held_until = Clock::now() + std::chrono::milliseconds(ps->hold_ms);
  next_resume_at = std::min(next_resume_at, ps->held_until);
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, tp.topic.c_str(), tp.partition);
  rd_kafka_pause_partitions(consumer, l);
  rd_kafka_topic_partition_list_destroy(l);
  SeekOne(tp.topic, tp.partition, ps->applier->next_offset());
}

void Engine::Rep::ResumeHeld(Clock::time_point now) {
  if (!any_held || now < next_resume_at) return;
  any_held = false;
  next_resume_at = Clock::time_point::max();
  for (auto& [tp, ps] : owned) {
    if (!ps.held) continue;
    if (now >= ps.held_until && !blocked && !SeekOne(tp.topic, tp.partition, ps.applier->next_offset())) {
      ps.held_until = now + std::chrono::milliseconds(ps.hold_ms);  // the seek failed: stay held, try again
    }
    if (now < ps.held_until || blocked) {
      any_held = true;
      next_resume_at = std::min(next_resume_at, blocked ? now + std::chrono::milliseconds(250) : ps.held_until);
      continue;
    }
    ps.held = false;
    rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, tp.topic.c_str(), tp.partition);
    rd_kafka_resume_partitions(consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
  }
}

bool Engine::Rep::Commit(bool force) {
  std::vector<std::pair<const TopicPartition*, PartitionState*>> moved;
  for (auto& [tp, ps] : owned) {
    if (ps.applier->dirty()) moved.emplace_back(&tp, &ps);
  }
  // Expired state of owned partitions first: a partial written to an
  // expired bucket later in the batch then starts it over.
  // Not in the final commits (revoke, shutdown), which should be quick.
  state::WriteBatch batch(*store);
  std::vector<std::pair<const TopicPartition*, PartitionState*>> swept;
  std::optional<std::pair<std::map<uint64_t, state::Store::ExpiryCursor>, Clock::time_point>> sweep_before;
  if (changelog && !blocked && !force && (!sweep_pending.empty() || Clock::now() >= next_sweep)) {
    sweep_before.emplace(sweep_pending, next_sweep);
    CollectExpired(&batch, &swept);
  }
  // Deletes that did not commit are collected again: the sweep resumes
  // where this commit's began.
  auto sweep_failed = [&] {
    if (sweep_before) std::tie(sweep_pending, next_sweep) = std::move(*sweep_before);
  };
  if (moved.empty() && batch.Count() == 0) {
    if (!blocked) return true;
    // Blocked after a failed commit (and rewound to the stored offsets):
    // there is nothing to write, but resuming needs proof that the store
    // takes writes again, not just nothing to do.
    if (auto st = store->ProbeWrite(); !st.ok()) {
      spdlog::warn("state store still refuses writes: {}", st.ToString());
      probe.commit_failures.fetch_add(1);
      return false;
    }
    return true;
  }
  const auto t0 = Clock::now();
  // Dead letters first: an offset is never stored past a record whose dead
  // letter is not yet acknowledged by Kafka.
  if (!dlq->AllDelivered(force ? 10000 : 1000)) {
    spdlog::warn("dead-letter topic not acknowledging; holding the commit");
    probe.commit_failures.fetch_add(1);
    sweep_failed();
    return false;
  }
  acc.Flush(&batch);
  for (auto& [tp, ps] : moved) ps->applier->AppendTo(&batch);
  auto in_transaction = moved;
  in_transaction.insert(in_transaction.end(), swept.begin(), swept.end());
  absl::Status st = changelog ? CommitChangelog(&batch, in_transaction) : absl::OkStatus();
  if (st.code() == absl::StatusCode::kAborted) {
    // The transactional producer is fenced or broken (Changelog::Commit):
    // this replica must not write its partitions again. Stop; the group
    // moves them to a replica that restores from the changelog.
    SetFatal(absl::AbortedError(fmt::format("changelog: {}", std::string(st.message()))));
    return false;
  }
  if (st.ok()) st = store->Commit(&batch);
  if (!st.ok()) {
    // The batch is lost with its partials: rewind to what is durable.
    spdlog::error("commit failed: {}", st.ToString());
    probe.commit_failures.fetch_add(1);
    sweep_failed();
    ResetToStored();
    return false;
  }
  rd_kafka_topic_partition_list_t* offs = rd_kafka_topic_partition_list_new(static_cast<int>(moved.size()));
  for (auto& [tp, ps] : moved) {
    ps->applier->OnCommitted();
    rd_kafka_topic_partition_list_add(offs, tp->topic.c_str(), tp->partition)->offset = ps->applier->next_offset();
    PublishNewest(*ps->applier);
  }
  // Advisory only (lag monitoring by other tools); failures are harmless.
  // With changelogs the transaction has committed them already.
  if (!changelog) rd_kafka_commit(consumer, offs, 1);
  rd_kafka_topic_partition_list_destroy(offs);
  probe.commits.fetch_add(1, std::memory_order_relaxed);
  probe.commit_latency.Observe(std::chrono::duration<double>(Clock::now() - t0).count());
  const CommitInfo info{store->LatestSequence(), probe.newest_event_ms.load()};
  for (const auto& l : listeners) l(info);
  return true;
}

void Engine::Rep::PublishNewest(const PartitionApplier& a) {
  const int64_t v = a.newest_event_ms();
  if (v == PartitionAdmission::kNoEvents) return;
  auto raise = [v](std::atomic<int64_t>& x) {
    if (v > x.load(std::memory_order_relaxed)) x.store(v, std::memory_order_relaxed);
  };
  raise(probe.newest_event_ms);
  raise(probe.newest_event_ms_by_family[static_cast<size_t>(a.family())]);
}

void Engine::Rep::SetPaused(bool paused) {
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(static_cast<int>(owned.size()));
  for (const auto& [tp, ps] : owned) {
    if (!paused && ps.held) continue;  // ResumeHeld resumes it
    rd_kafka_topic_partition_list_add(l, tp.topic.c_str(), tp.partition);
  }
  if (paused) {
    rd_kafka_pause_partitions(consumer, l);
  } else {
    rd_kafka_resume_partitions(consumer, l);
  }
  rd_kafka_topic_partition_list_destroy(l);
}

// Retention deleted records while we were fetching them and the operator
// accepts the loss: move the partition to its log start, counting the gap.
bool Engine::Rep::SkipToLogStart(const std::string& topic, int32_t partition) {
  auto it = owned.find({topic, partition});
  if (it == owned.end()) return false;
  int64_t lo = 0, hi = 0;
  const int64_t next = it->second.applier->next_offset();
  if (rd_kafka_query_watermark_offsets(consumer, topic.c_str(), partition, &lo, &hi, 10000) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      lo <= next) {
    return false;
  }
  spdlog::error(
      "{}[{}]: records {}..{} ({}) were deleted before kpid applied them; continuing from the log start "
      "as --accept-lost-records asks (counted in kpistream_records_lost_total)",
      topic, partition, next, lo - 1, lo - next);
  probe.lost_records.fetch_add(static_cast<uint64_t>(lo - next));
  it->second.applier->SkipTo(lo);
  return SeekOne(topic, partition, lo);
}

bool Engine::Rep::SeekOne(const std::string& topic, int32_t partition, int64_t offset) {
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)->offset = offset;
  rd_kafka_error_t* e = rd_kafka_seek_partitions(consumer, l, 10000);
  // A failure of the partition's own seek is reported in its element, not
  // in the returned error.
  const rd_kafka_resp_err_t part_err = l->elems[0].err;
  rd_kafka_topic_partition_list_destroy(l);
  if (e) {
    spdlog::error("seek {}[{}] to {}: {}", topic, partition, offset, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return false;
  }
  if (part_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::error("seek {}[{}] to {}: {}", topic, partition, offset, rd_kafka_err2str(part_err));
    return false;
  }
  return true;
}

void Engine::Rep::OnClientError(rd_kafka_resp_err_t err, const char* reason) {
  spdlog::warn("kafka: {}", reason);
  // librdkafka's "all brokers down" event is not reliable for a consumer
  // (its bootstrap and coordinator connections count apart), and nothing
  // reports the brokers' return: a connection-level error makes the engine
  // probe the cluster (ProbeBrokers) until a metadata request succeeds.
  if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
      err == RD_KAFKA_RESP_ERR__RESOLVE) {
    brokers_suspect = true;
  }
}

// Asks for metadata (brokers only). Failing: every broker is unreachable, so
// not ready (what we serve is frozen at the last commit, and /health and
// /metrics must say so). Runs on the consumer thread, at most once a second,
// only after a connection error and until a request succeeds.
void Engine::Rep::ProbeBrokers() {
  const auto now = Clock::now();
  if (now - last_broker_probe < std::chrono::seconds(1)) return;
  last_broker_probe = now;
  const struct rd_kafka_metadata* md = nullptr;
  const auto e = rd_kafka_metadata(consumer, 0, nullptr, &md, 500);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (!brokers_down) {
      spdlog::error("kafka: no broker answers ({}); not ready until one does", rd_kafka_err2str(e));
      brokers_down = true;
      probe.kafka_reachable = false;
    }
    return;
  }
  rd_kafka_metadata_destroy(md);
  if (brokers_down) spdlog::info("kafka: reachable again");
  brokers_down = false;
  brokers_suspect = false;
  probe.kafka_reachable = true;
}

void Engine::Rep::SetHighWatermarkPartitions() {
  if (!hw) return;
  std::vector<TopicPartition> parts;
  for (const auto& [tp, ps] : owned) parts.push_back(tp);
  hw->SetPartitions(std::move(parts));
}

// Offsets no record is delivered for: the commit and abort markers of
// transactions (one offset each) and the records of aborted transactions
// (read_committed). They sit below the high watermark forever, so lag,
// "caught up" and the stall guard must step over them, or a partition
// written by a transactional producer never reads lag 0. librdkafka moves
// a partition's position past them when its fetcher reads them (the
// position is the offset after the last record delivered or stepped over),
// so the position, once past the next offset to apply, is where the next
// record can be: everything below it was applied or is not a record.
void Engine::Rep::StepOverUnreadOffsets() {
  std::vector<PartitionState*> behind;
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(static_cast<int>(owned.size()));
  for (auto& [tp, ps] : owned) {
    // A partition held, or not through a record since it was: its
    // position may be past the held record, which must not be stepped over.
    if (ps.held || ps.hold_ms > 0) continue;
    if (ps.known_hi > ps.applier->next_offset() || ps.assigned_hi > ps.applier->next_offset()) {
      rd_kafka_topic_partition_list_add(l, tp.topic.c_str(), tp.partition);
      behind.push_back(&ps);
    }
  }
  if (l->cnt > 0 && rd_kafka_position(consumer, l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < l->cnt; ++i) {
      const auto& e = l->elems[i];
      auto it = owned.find({e.topic, e.partition});
      if (it == owned.end() || e.err || e.offset < 0) continue;
      auto& a = *it->second.applier;
      if (e.offset > a.next_offset()) {
        probe.skipped_offsets.fetch_add(static_cast<uint64_t>(e.offset - a.next_offset()), std::memory_order_relaxed);
        a.SkipTo(e.offset);
      }
    }
  }
  rd_kafka_topic_partition_list_destroy(l);
  for (auto& [tp, ps] : owned) {
    if (!ps.caught_up && ps.applier->next_offset() >= ps.assigned_hi) {
      ps.caught_up = true;
      spdlog::info("{}[{}]: caught up at offset {}", tp.topic, tp.partition, ps.applier->next_offset());
    }
  }
}

void Engine::Rep::PublishLags() {
  const auto probed = hw->Probed();
  std::vector<EngineProbe::PartitionLag> lags;
  for (auto& [tp, ps] : owned) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_get_watermark_offsets(consumer, tp.topic.c_str(), tp.partition, &lo, &hi) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      hi = -1;
    }
    hi = std::max(hi, ps.assigned_hi);
    if (auto it = probed.find(tp); it != probed.end()) hi = std::max(hi, it->second);
    ps.known_hi = hi;
    const int64_t committed = ps.applier->committed_offset().value_or(0);
    if (hi >= 0) lags.push_back({tp.topic, tp.partition, std::max<int64_t>(0, hi - committed)});
  }
  int64_t total = 0;
  for (const auto& l : lags) total += l.lag;
  total_lag = total;
  probe.SetLags(std::move(lags));
}

// Records are waiting in Kafka for a partition that is not paused, yet
// nothing arrived from it for fetch_stall_timeout_ms: the fetcher is stuck.
// A guard, never seen firing: librdkafka 2.0 holds a partition's fetches
// while its shared queue is over queued.min.messages, which delays a
// partition but has not been seen to stop one.
// A seek to the next offset restarts its fetching; the offsets kpid applies
// do not change, so this is safe whatever the cause.
void Engine::Rep::CheckStalls(Clock::time_point now) {
  if (options.fetch_stall_timeout_ms <= 0) return;
  const auto timeout = std::chrono::milliseconds(options.fetch_stall_timeout_ms);
  for (auto& [tp, ps] : owned) {
    const int64_t next = ps.applier->next_offset();
    if (next != ps.progress_offset || ps.known_hi <= next || blocked || brokers_down || ps.held) {
      ps.progress_offset = next;
      ps.progress_at = now;
      continue;
    }
    if (now - ps.progress_at < timeout) continue;
    spdlog::warn(
        "{}[{}]: {} records wait in Kafka but none arrived for {} ms; seeking to offset {} to restart "
        "fetching",
        tp.topic, tp.partition, ps.known_hi - next, options.fetch_stall_timeout_ms, next);
    probe.fetch_stalls.fetch_add(1);
    ps.progress_at = now;
    SeekOne(tp.topic, tp.partition, next);
  }
}

void Engine::Rep::Run() {
  hw = std::make_unique<HighWatermarkProbe>(consumer, options.watermark_probe_interval_ms);
  SetHighWatermarkPartitions();
  const auto live_interval = std::chrono::milliseconds(options.commit_interval_ms);
  const auto catchup_interval =
      std::chrono::milliseconds(std::max(options.commit_interval_ms, options.catchup_commit_interval_ms));
  auto last_commit = Clock::now();
  auto last_trim = last_commit;
  auto backoff = live_interval;
  while (!stop) {
    const auto interval = total_lag > options.catchup_lag_records ? catchup_interval : live_interval;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, blocked ? 50 : 20);
    if (m) {
      Handle(m);
      rd_kafka_message_destroy(m);
    }
    dlq->Poll();
    const auto now = Clock::now();
    ResumeHeld(now);
    const bool due = now - last_commit >= (blocked ? backoff : interval);
    if (due || (!blocked && PendingBytes() > options.max_dirty_bytes)) {
      last_commit = now;
      if (!blocked) StepOverUnreadOffsets();
      if (Commit(false)) {
        if (blocked) {
          spdlog::info("commits succeed again; resuming consumption");
          blocked = false;
          SetPaused(false);
        }
        backoff = interval;
      } else if (!blocked) {
        blocked = true;
        SetPaused(true);
      } else {
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      }
      if (brokers_suspect) ProbeBrokers();
      PublishLags();
      RefreshPartitionCounts(now);
      CheckStalls(now);
      UpdateReady();
      // glibc keeps freed memory in its per-thread arenas: the commit
      // batches, event-id sets and librdkafka buffers freed each second
      // otherwise pile up as resident memory (RSS grew without bound past
      // the memory budget in a 10M-distinct run with de-duplication on,
      // while the live heap stayed ~100 MiB). Hand it back every 5 s.
      if (now - last_trim >= std::chrono::seconds(5)) {
        last_trim = now;
        ::malloc_trim(0);
      }
    }
  }
  ready = false;
  caught_up = false;
  const bool fatal_set = [&] {
    std::lock_guard<std::mutex> l(fatal_mu);
    return fatal.has_value();
  }();
  if (!fatal_set && !Commit(true)) spdlog::error("final commit failed; the next start replays from the last commit");
  hw->Stop();
  rd_kafka_consumer_close(consumer);
  dlq->AllDelivered(5000);
}

Engine::Engine(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Engine::~Engine() { Stop(); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, const kpi::Catalog& catalog,
                                                       const kpi::StateIds& ids, state::Store* store,
                                                       const state::Clock& clock) {
  auto rep = std::make_unique<Rep>(options, catalog, ids, store, clock);
  if (auto s = rep->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(rep)));
}

void Engine::AddCommitListener(CommitListener listener) { rep_->listeners.push_back(std::move(listener)); }

absl::Status Engine::Start() {
  if (rep_->started.exchange(true)) return absl::FailedPreconditionError("engine already started");
  rep_->thread = std::thread([this] { rep_->Run(); });
  return absl::OkStatus();
}

void Engine::Stop() {
  rep_->stop = true;
  if (rep_->thread.joinable()) rep_->thread.join();
}

bool Engine::Ready() const { return rep_->ready.load(); }
bool Engine::CaughtUp() const { return rep_->caught_up.load(); }
bool Engine::Replaying() const { return rep_->replaying.load(); }

std::optional<absl::Status> Engine::Fatal() const {
  std::lock_guard<std::mutex> l(rep_->fatal_mu);
  return rep_->fatal;
}

const EngineProbe& Engine::probe() const { return rep_->probe; }

Engine::Ownership Engine::Owned() const {
  Ownership out;
  std::lock_guard<std::mutex> l(rep_->ownership_mu);
  out.epoch = rep_->ownership_epoch.load();
  for (const auto& [tp, source] : rep_->published_owned) {
    out.sources.push_back(source);
    out.names.push_back(fmt::format("{}[{}]", tp.topic, tp.partition));
  }
  for (const auto& [topic, count] : rep_->partition_counts) {
    for (int32_t p = 0; p < count; ++p) {
      if (!rep_->published_owned.count({topic, p})) out.missing.push_back(fmt::format("{}[{}]", topic, p));
    }
  }
  return out;
}

uint64_t Engine::OwnershipEpoch() const { return rep_->ownership_epoch.load(); }

}  // namespace kpistream::ingest
