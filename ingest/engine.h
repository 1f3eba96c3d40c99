// The ingest engine: a Kafka consumer-group member that decodes, routes and
// aggregates records and commits partials + next offsets atomically to the
// state store (invariant 1). Bad records go to the dead-letter topic.
//
// Lifecycle: Create() -> Start() -> ... -> Stop() (final commit, leaves the
// group). Thread-safety: Start/Stop from one controlling thread; Ready(),
// Fatal() and probe() from any thread. All Kafka and state work happens on
// the engine's own consumer thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <mutex>  // std::mutex, not absl::Mutex: TSan sees pthread locks, Debian's abseil is not instrumented
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "ingest/decoder.h"
#include "ingest/partition_applier.h"
#include "ingest/source_mapping.h"
#include "kpi/catalog.h"
#include "state/clock.h"
#include "state/store.h"

namespace kpistream::ingest {

// A Kafka topic-partition.
struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  auto operator<=>(const TopicPartition&) const = default;
};

struct TopicBinding {
  std::string topic;
  kpi::Family family = kpi::Family::kCampaign;
  PayloadFormat format = PayloadFormat::kAuto;
  // A declared source (kafka.sources): its records are the user's JSON,
  // mapped onto `family` (ingest/source_mapping.h). Null: the project's own
  // schema in `format`.
  std::shared_ptr<const SourceMapping> mapping;
};

struct EngineOptions {
  std::string brokers;
  std::string group_id = "kpistream";
  std::vector<TopicBinding> topics;
  std::string dlq_topic = "kpistream.dlq";
  // A dead letter carries at most this many bytes of the original payload
  // (header kpistream.truncated = the original size when cut), so an
  // oversized record still fits Kafka's default 1 MB message limit on the
  // dead-letter topic; its source topic, partition and offset locate the
  // whole record.
  size_t dlq_max_payload_bytes = 900 * 1000;
  // librdkafka settings passed through verbatim (SASL, TLS, ...), applied to
  // the consumer and the dead-letter producer.
  std::map<std::string, std::string> kafka_properties;
  // Commit at least this often while there is new data.
  int commit_interval_ms = 200;
  // While more than catchup_lag_records are waiting in Kafka (replay after a
  // restart, a backlog), commit this often instead: more events fold into
  // each partial per commit, and freshness does not matter until caught up.
  int catchup_commit_interval_ms = 1000;
  int64_t catchup_lag_records = 100000;
  // Commit early when the dirty partials (and the event ids applied since
  // the last commit) exceed this (invariant 6).
  size_t max_dirty_bytes = 64ull << 20;
  // librdkafka's prefetch queue: at most this many bytes of fetched, not
  // yet consumed records (queued.max.messages.kbytes); kafka.properties
  // overrides it.
  size_t fetch_queue_bytes = 32ull << 20;
  // How often a helper thread asks the brokers for each owned partition's
  // high watermark. librdkafka's cached one is only refreshed by fetch
  // responses, so it goes stale exactly when a partition is not being
  // fetched; lag (and "caught up") must never rest on it alone.
  int watermark_probe_interval_ms = 1000;
  // A partition with records waiting in Kafka, not paused, from which
  // nothing arrived for this long is re-seeked to its next offset (and
  // counted in EngineProbe::fetch_stalls). A guard against the fetcher
  // getting stuck; 0 turns it off.
  int fetch_stall_timeout_ms = 10000;
  DecoderOptions decoder;
  // Events stamped further ahead of the clock are rejected as `future`
  // (ApplierOptions::max_future_ms).
  int64_t max_future_ms = 10 * 60 * 1000;
  // When records kpid still needed were deleted from Kafka (a stored offset
  // below the log start, or out of range while fetching), continue from the
  // log start and count them in EngineProbe::lost_records, instead of
  // stopping. An operator's one-off decision (kpid --accept-lost-records).
  bool accept_lost_records = false;
  // Exactly once per event, not only per record: an event whose event_id
  // was already applied from the same partition is dead-lettered as a
  // duplicate (a producer's retry, a replayed batch). Ids are remembered
  // while their event time is within this window of the partition's newest
  // event; an event older than that is late for every measure whose
  // lateness is at most the window. 0 (the default) turns it off: an
  // idempotent producer (Kafka's default since 3.0) never duplicates on
  // retry, and de-duplication costs a RocksDB lookup and write per event
  // (2.2-2.8x the CPU per event of the full catalog, docs/BENCHMARKS.md).
  int64_t dedup_window_ms = 0;
  // Scale-out (docs/SCALE_OUT.md): every commit is first written, as one
  // Kafka transaction, to the compacted changelog of each input partition
  // it changed (ingest/changelog.h), and a newly assigned partition is
  // restored from its changelog before its records are applied, so
  // replicas in one consumer group hand partitions over with their state,
  // exactly once. Off: a single replica, whose state is only local.
  bool changelog = false;
  // With changelogs, state past retention is deleted by a sweep that ships
  // a tombstone for each key it deletes, in the commits' transactions, so
  // that the changelogs (and a restore) hold what is retained and not every
  // bucket ever written (docs/SCALE_OUT.md, "Expired state"). A pass over
  // the owned partitions starts this often (the first a minute after the
  // start) and deletes at most 20,000 keys per commit.
  int64_t changelog_sweep_interval_ms = 3600 * 1000;
};

// Latency histogram with fixed bounds (seconds); lock-free.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1,    2.5};
  void Observe(double seconds);
  // Cumulative counts per bound (+Inf last), sum and count.
  void Snapshot(std::vector<uint64_t>* cumulative, double* sum, uint64_t* count) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> sum_micros_{0};
  std::atomic<uint64_t> count_{0};
};

// What a commit made visible to readers.
struct CommitInfo {
  uint64_t store_sequence = 0;  // state::Store::LatestSequence after the commit
  int64_t newest_event_ms = 0;  // newest event time committed, over all partitions
};
// Called on the consumer thread after every successful commit; must return
// quickly (wake a thread, set a flag). Readers (the query cache, /metrics,
// the alerter, watch streams) subscribe instead of polling the store.
using CommitListener = std::function<void(const CommitInfo&)>;

// The engine's own metrics; the exporter only reads them.
struct EngineProbe {
  explicit EngineProbe(const kpi::Catalog& catalog) : ingest(catalog) {}
  IngestStats ingest;  // the per-record step: consumed, applied, rejected, late, overflow, cut
  std::atomic<uint64_t> dlq_produced{0};
  std::atomic<uint64_t> dlq_failed{0};
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> commit_failures{0};
  std::atomic<uint64_t> rebalances{0};
  // Newest committed (queryable) event time, over all partitions and per
  // family; never ahead of the clock by more than max_future.
  std::atomic<int64_t> newest_event_ms{0};
  std::array<std::atomic<int64_t>, kpi::kNumFamilies> newest_event_ms_by_family{};
  std::atomic<int64_t> assigned_partitions{0};
  // False from librdkafka's "all brokers down" until a metadata request
  // succeeds again; the engine is not ready meanwhile.
  std::atomic<bool> kafka_reachable{true};
  // Records deleted from Kafka before kpid applied them, skipped because
  // EngineOptions::accept_lost_records was set.
  std::atomic<uint64_t> lost_records{0};
  // Offsets no consumer receives (transaction markers, records of aborted
  // transactions) stepped over.
  std::atomic<uint64_t> skipped_offsets{0};
  // Partitions found with records waiting and nothing fetched for
  // EngineOptions::fetch_stall_timeout_ms, and re-seeked.
  std::atomic<uint64_t> fetch_stalls{0};
  LatencyHistogram commit_latency;
  // Changelog restores (EngineOptions::changelog): partitions restored,
  // records and bytes read, and the time spent, per assignment.
  std::atomic<uint64_t> restores{0};
  std::atomic<uint64_t> restored_records{0};
  std::atomic<uint64_t> restored_bytes{0};
  LatencyHistogram restore_latency;
  // Records written to changelogs, and changelog transactions that failed.
  std::atomic<uint64_t> changelog_records{0};
  std::atomic<uint64_t> changelog_failures{0};
  // Keys past retention deleted by the expiry sweep, each with a tombstone
  // in its changelog.
  std::atomic<uint64_t> changelog_tombstones{0};

  struct PartitionLag {
    std::string topic;
    int32_t partition;
    int64_t lag;
  };
  std::vector<PartitionLag> Lags() const ABSL_LOCKS_EXCLUDED(mu);
  void SetLags(std::vector<PartitionLag> lags) ABSL_LOCKS_EXCLUDED(mu);

 private:
  mutable std::mutex mu;
  std::vector<PartitionLag> lags_ ABSL_GUARDED_BY(mu);
};

class Engine {
 public:
  // REQUIRES: catalog, ids, store and clock outlive the engine.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                                      const kpi::Catalog& catalog,
                                                                      const kpi::StateIds& ids, state::Store* store,
                                                                      const state::Clock& clock = state::Clock::Wall());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // REQUIRES: before Start().
  void AddCommitListener(CommitListener listener);
  [[nodiscard]] absl::Status Start();
  // Final commit, leaves the consumer group, joins the thread. Idempotent.
  void Stop();

  // Serving: state loaded, partitions assigned, commits succeeding.
  bool Ready() const;
  // Ready, and not Replaying(): the state holds no replay in progress.
  bool CaughtUp() const;
  // Some owned partition has not been read up to the high watermark it had
  // when it was assigned (a restart, a redeploy, a rebalance), or more than
  // catchup_lag_records wait in Kafka (a backlog): what the state holds is
  // behind, being caught up.
  bool Replaying() const;
  // Set when the engine stopped on an unrecoverable error (e.g. stored offset
  // below the log start): the message says what happened and what to do.
  std::optional<absl::Status> Fatal() const;
  const EngineProbe& probe() const;

  // Scale-out (EngineOptions::changelog): the sources (state::SourceId)
  // this replica owns and has restored, and the partitions of its input
  // topics it does not own, "<topic>[<partition>]" (partition counts from
  // Kafka's metadata, refreshed every 10 s). Thread-safe.
  struct Ownership {
    std::vector<uint64_t> sources;
    std::vector<std::string> names;  // like sources: "<topic>[<partition>]"
    std::vector<std::string> missing;
    uint64_t epoch = 0;  // OwnershipEpoch() when this was read, under the same lock
  };
  Ownership Owned() const;
  // Changes whenever Owned() may have (an assignment or a revocation).
  uint64_t OwnershipEpoch() const;

 private:
  struct Rep;
  explicit Engine(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::ingest
