// The durable state of kpid: a RocksDB database hidden behind a small
// contract. Partials are merged with a RocksDB merge operator, so a commit
// never reads before it writes.
//
// Thread-safety: all methods are safe to call concurrently. Commit() is called
// by the consumer thread only; readers (queries, /metrics) use Scan() and the
// Read*() methods, which never block Commit().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "state/keys.h"

namespace kpistream::state {

struct StoreOptions {
  std::string path;
  // One LRU block cache for the whole database (data blocks, and the index
  // and filter blocks of the tables that keep them in the cache); memtables
  // are charged to it through a WriteBufferManager, up to half of it
  // (invariant 6). kpid gives it half of memory_budget_mb.
  uint64_t cache_bytes = 128ull << 20;
  // fsync the WAL on every commit. Off: a process crash (kill -9) loses
  // nothing, a power loss may lose the last commits (offsets go back with the
  // partials, so it still never double counts).
  bool sync_commits = false;
  // Retention per roll-up tier, seconds (0 = forever): partials whose bucket
  // ended longer ago than this are dropped by compaction. Defaults keep fine
  // buckets for every standard window (<= 30d) ending now; windows reaching
  // further back read whole hours and days there (QueryEngine rounds).
  int64_t retention_fine_s = 35 * 86400;
  int64_t retention_hour_s = 400 * 86400;
  int64_t retention_day_s = 0;
  // Writes are refused (UNAVAILABLE, "disk almost full") while the state
  // directory's filesystem has less free space than this: RocksDB's flushes
  // and compactions need room, and a write that fails half way into the WAL
  // leaves a DB that must be reopened, so kpid stops before the disk is full.
  uint64_t min_free_bytes = 64ull << 20;
  // The clock compaction compares with; injectable for tests.
  std::function<int64_t()> now_s;
};

// An atomic unit of change: partial deltas and next offsets, applied together
// or not at all.
class Store;
class WriteBatch {
 public:
  // REQUIRES: store outlives the batch.
  explicit WriteBatch(const Store& store);
  ~WriteBatch();
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;

  // Merges an encoded partial (see aggregate.h) into key (see AggKey).
  void MergePartial(std::string_view key, std::string_view encoded);
  void PutOffset(uint64_t source, int64_t next_offset, int64_t newest_event_ms);
  // Records a dimension value kept under the dimension's cap on a source,
  // and how many values of the dimension the source keeps so far.
  void PutKeptValue(uint64_t source, uint32_t dimension_id, std::string_view value);
  void PutKeptCount(uint64_t source, uint32_t dimension_id, uint32_t count);
  // Records that the event with this id was applied from source, at offset.
  void PutEventId(uint64_t source, std::string_view event_id, int64_t event_ms, int64_t offset);
  // Sets a key of a source-scoped keyspace (agg, offsets, groups,
  // event_ids) to a full value, replacing what is stored (a restore from a
  // changelog; a partial is then not merged but set).
  void Put(Keyspace keyspace, std::string_view key, std::string_view value);
  // Deletes a key of a source-scoped keyspace (agg, offsets, groups,
  // event_ids; state past retention, see Store::CollectExpired).
  void Delete(Keyspace keyspace, std::string_view key);
  // Records the next offset to read in a source's changelog partition
  // (meta keyspace, "changelog/<source BE>").
  void PutChangelogOffset(uint64_t source, int64_t next_offset);
  size_t Count() const;
  size_t ByteSize() const;
  void Clear();

 private:
  friend class Store;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

struct StoreStats {
  uint64_t live_data_bytes = 0;
  uint64_t sst_files_bytes = 0;
  uint64_t memtable_bytes = 0;
  uint64_t block_cache_usage_bytes = 0;
  uint64_t table_readers_bytes = 0;  // index and filter blocks held outside the block cache
  uint64_t pending_compaction_bytes = 0;
  uint64_t running_compactions = 0;
  uint64_t estimated_keys = 0;
};

// A consistent read of the committed state: every read through one view
// sees the store as of one commit (a RocksDB snapshot), so the offsets and
// event-time watermarks it reports are exactly those of the partials it
// scans. Cheap to take; keep it short-lived (it pins what it sees from
// compaction). Thread-safety: const methods safe from any thread; the view
// must not outlive its store.
class ReadView {
 public:
  ~ReadView();
  ReadView(const ReadView&) = delete;
  ReadView& operator=(const ReadView&) = delete;

  // The store's sequence number the view reads at (see
  // Store::LatestSequence).
  uint64_t sequence() const;
  // Every source with committed state: its next offset and its newest
  // event time (ms; INT64_MIN if none).
  struct SourceState {
    uint64_t source = 0;
    int64_t next_offset = 0;
    int64_t newest_event_ms = 0;
  };
  [[nodiscard]] absl::StatusOr<std::vector<SourceState>> Sources() const;
  // As Store::Scan, at the view's commit.
  using ScanFn = std::function<void(int64_t bucket, std::string_view group_key, std::string_view encoded)>;
  [[nodiscard]] absl::Status Scan(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket_begin,
                                  int64_t bucket_end, const ScanFn& fn) const;

 private:
  friend class Store;
  struct Rep;
  explicit ReadView(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

class Store {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Stable id for a name of a kind ("topic", "measure"): assigned on first use
  // and persisted, so renumbering the config never mixes series.
  [[nodiscard]] absl::StatusOr<uint32_t> IdFor(std::string_view kind, std::string_view name);
  // The id of a series whose stored form matters (a measure: aggregation,
  // group-by dimensions, bucket width): a name keeps its id while its shape
  // stays; a name under a new shape gets an id of its own, so partials
  // written under one shape are never read under another (a changed
  // group_by would put old values under the wrong dimensions, a changed
  // aggregation cannot be merged). Going back to an earlier shape finds its
  // series again. The name's first shape (or, in a store from before
  // shapes, the shape first bound) keeps the plain IdFor id.
  struct SeriesId {
    uint32_t id = 0;
    std::string first_shape;  // the shape that owns the plain id
  };
  [[nodiscard]] absl::StatusOr<SeriesId> SeriesIdFor(std::string_view kind, std::string_view name,
                                                     std::string_view shape);

  // A measure's finest buckets are as wide as `tier`'s (an hour or a day):
  // compaction keeps them as long as that tier's retention, since no
  // coarser roll-up holds them. Until the first call, fine-tier partials are
  // never dropped (the catalog is not bound yet). Thread-safe.
  void SetFineTier(uint32_t measure_id, Tier tier);

  [[nodiscard]] absl::Status Commit(WriteBatch* batch);

  // Changelogs (docs/SCALE_OUT.md). A change as shipped to a changelog:
  // the key of a source-scoped keyspace and its full value after the commit.
  using ChangeFn = std::function<void(Keyspace keyspace, std::string_view key, std::string_view value)>;
  // Rewrites *batch so that each merge of a partial becomes a put of the
  // partial's full value after the batch (the committed value merged with
  // the delta), and calls fn once per key the batch writes, with that full
  // value (several writes of one key: its last value; a key the batch ends
  // up deleting: a value whose data() is null). Reads the committed
  // state: REQUIRES no other commit between this call and Commit(batch)
  // (the consumer thread is the only committer). DATA_LOSS if a stored or
  // batched partial cannot be decoded.
  [[nodiscard]] absl::Status ResolveChanges(WriteBatch* batch, const ChangeFn& fn) const;
  // Calls fn for every key of a source in the agg, offsets, groups and
  // event_ids keyspaces, with its value (partials of every measure id ever
  // assigned). A consistent snapshot.
  [[nodiscard]] absl::Status ScanSource(uint64_t source, const ChangeFn& fn) const;
  // Deletes every key of a source in those keyspaces, and its changelog
  // offset, in one atomic write.
  [[nodiscard]] absl::Status DropSource(uint64_t source);
  // The next offset to read in the source's changelog partition, if one
  // was recorded (WriteBatch::PutChangelogOffset).
  [[nodiscard]] absl::StatusOr<std::optional<int64_t>> ReadChangelogOffset(uint64_t source) const;
  // A small real write (a meta key): whether the store accepts writes again
  // after a failure, when there is nothing else to commit.
  [[nodiscard]] absl::Status ProbeWrite();

  struct SourcePosition {
    int64_t next_offset = 0;
    int64_t newest_event_ms = 0;  // INT64_MIN if no event yet
  };
  // Where a source stands, if any state was ever committed for it.
  [[nodiscard]] absl::StatusOr<std::optional<SourcePosition>> ReadOffset(uint64_t source) const;
  // Every source with committed state, with its next offset.
  [[nodiscard]] absl::StatusOr<std::vector<std::pair<uint64_t, int64_t>>> ListOffsets() const;
  // Whether a dimension value was kept (committed) on a source.
  [[nodiscard]] absl::StatusOr<bool> HasKeptValue(uint64_t source, uint32_t dimension_id, std::string_view value) const;
  // The applied event with this id, if it is still remembered (see
  // SetEventIdHorizon).
  struct AppliedEvent {
    int64_t event_ms = 0;
    int64_t offset = 0;
  };
  [[nodiscard]] absl::StatusOr<std::optional<AppliedEvent>> LookupEventId(uint64_t source,
                                                                          std::string_view event_id) const;
  // The same, for a key already built with EventIdKey (the engine has one
  // per event anyway).
  [[nodiscard]] absl::StatusOr<std::optional<AppliedEvent>> LookupEventIdKey(std::string_view key) const;
  // Event ids of source whose event time is older than horizon_ms are no
  // longer needed: compaction drops them. In memory only; until it is set
  // after a restart, compaction keeps every id.
  void SetEventIdHorizon(uint64_t source, int64_t horizon_ms);
  // Expiry through a changelog (docs/SCALE_OUT.md, "Expired state"). The
  // compaction filters drop expired partials and event ids without a trace,
  // which a changelog cannot follow: a source this replica ships to a
  // changelog is marked here, its expired keys are then kept by compaction
  // and deleted by CollectExpired in commits that ship their tombstones.
  // In memory only. Thread-safe.
  void SetExpiryBySweep(uint64_t source, bool on);
  // Where CollectExpired stopped: in the partials (by key, in key order:
  // tier, then measure id, then bucket) or in the event ids. Default: the
  // start.
  struct ExpiryCursor {
    bool event_ids = false;
    std::string key;  // the next key to visit; empty: the start of the keyspace's part
  };
  struct ExpiryLimits {
    size_t deletes = 20000;  // deletes added per call at most
    size_t visits = 200000;  // keys read per call at most (event ids are not in time order)
  };
  struct ExpiryProgress {
    size_t deleted = 0;  // deletes added to the batch by the call
    size_t visited = 0;  // keys read
    bool done = false;   // the source is finished; else call again from *cursor
  };
  // Adds to *batch a delete of each expired key of `source`, from *cursor
  // on, within `limits`: partials whose bucket passed its tier's retention
  // (as the compaction filter judges it, at StoreOptions::now_s) and event
  // ids older than the source's horizon (SetEventIdHorizon; none set:
  // none). *progress says what was added (also when an error is returned:
  // the deletes added before it stay in the batch) and whether the source
  // is done; *cursor is where the next call continues. Measures bound
  // during a pass are visited if their ids sort after the cursor. Reads the
  // committed state; the consumer thread only. DATA_LOSS for a malformed
  // key or record.
  [[nodiscard]] absl::Status CollectExpired(uint64_t source, const ExpiryLimits& limits, ExpiryCursor* cursor,
                                            WriteBatch* batch, ExpiryProgress* progress) const;
  // Committed kept-value counts of a source, per dimension id.
  [[nodiscard]] absl::StatusOr<std::vector<std::pair<uint32_t, uint32_t>>> ReadKeptCounts(uint64_t source) const;

  // Calls fn(bucket, group_key, encoded_partial) for every partial of
  // (tier, measure, source) with bucket in [bucket_begin, bucket_end), in
  // bucket order. Reads a consistent snapshot.
  using ScanFn = std::function<void(int64_t bucket, std::string_view group_key, std::string_view encoded)>;
  [[nodiscard]] absl::Status Scan(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket_begin,
                                  int64_t bucket_end, const ScanFn& fn) const;

  // The alerts keyspace, owned by the alert evaluator: alert instances and
  // the transition log. Applies puts (value set) and deletes (nullopt)
  // atomically; Scan visits the keys with a prefix in order.
  using AlertWrite = std::pair<std::string, std::optional<std::string>>;
  [[nodiscard]] absl::Status WriteAlerts(const std::vector<AlertWrite>& writes);
  using AlertScanFn = std::function<void(std::string_view key, std::string_view value)>;
  [[nodiscard]] absl::Status ScanAlerts(std::string_view prefix, const AlertScanFn& fn) const;

  // A consistent view of the committed state (see ReadView).
  std::unique_ptr<ReadView> View() const;

  // Changes with every write to the store (RocksDB's latest sequence
  // number): equal values mean no commit happened in between, so anything
  // read from the store then is still what a read now would return.
  uint64_t LatestSequence() const;

  StoreStats Stats() const;
  const StoreOptions& options() const;
  // Compacts the partials and event ids now (applies retention and horizons); for tests and tools.
  [[nodiscard]] absl::Status CompactForTest();

 private:
  absl::StatusOr<uint32_t> IdForLocked(std::string_view kind, std::string_view name);  // REQUIRES: id_mu held
  friend class WriteBatch;
  friend class ReadView;
  struct Rep;
  explicit Store(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::state
