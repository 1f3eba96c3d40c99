#include "state/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "state/aggregate.h"

namespace kpistream::state {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = fmt::format("{}: {}", what, s.ToString());
  if (s.IsNoSpace() || s.IsIOError()) return absl::UnavailableError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// Merges encoded partials (aggregate.h); associative, so RocksDB may combine
// operands in any grouping. All of a key's operands are merged in one pass
// (MergeEncodedMany): an AssociativeMergeOperator is handed them two at a time
// and re-encodes every intermediate result, which for an HLL read across N
// commits' operands cost N dense 16 KiB scans (21 % of kpid's CPU while
// /metrics was scraped in the demo).
class PartialMergeOperator : public rocksdb::MergeOperator {
 public:
  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    std::vector<std::string_view> parts;
    parts.reserve(in.operand_list.size() + 1);
    if (in.existing_value != nullptr) parts.emplace_back(in.existing_value->data(), in.existing_value->size());
    for (const auto& op : in.operand_list) parts.emplace_back(op.data(), op.size());
    return MergeEncodedMany(parts, &out->new_value);
  }
  bool PartialMergeMulti(const rocksdb::Slice& /*key*/, const std::deque<rocksdb::Slice>& operands,
                         std::string* new_value, rocksdb::Logger* /*logger*/) const override {
    std::vector<std::string_view> parts;
    parts.reserve(operands.size());
    for (const auto& op : operands) parts.emplace_back(op.data(), op.size());
    return MergeEncodedMany(parts, new_value);
  }
  const char* Name() const override { return "kpistream.PartialMerge.v1"; }
};

// Sources whose expired keys are deleted by Store::CollectExpired (an owner
// shipping its state to a changelog, which must see a tombstone for every key
// that goes), not silently by the compaction filters below.
class SweptSources {
 public:
  void Set(uint64_t source, bool on) {
    std::lock_guard<std::mutex> l(mu_);
    if (on) {
      sources_.insert(source);
    } else {
      sources_.erase(source);
    }
  }
  bool Contains(uint64_t source) const {
    std::lock_guard<std::mutex> l(mu_);
    return sources_.count(source) > 0;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_set<uint64_t> sources_ ABSL_GUARDED_BY(mu_);
};

// Drops partials older than their tier's retention. Reads the key only. A
// measure whose finest buckets are an hour or a day wide has no coarser
// roll-up: its fine-tier keys are kept as long as the hour or day tier
// (Store::SetFineTier); until the catalog is bound, fine keys are kept.
// Keys of swept sources are left to Store::CollectExpired.
class RetentionFilter : public rocksdb::CompactionFilter {
 public:
  using FineTiers = std::unordered_map<uint32_t, Tier>;
  RetentionFilter(std::array<int64_t, 3> retention, std::function<int64_t()> now, const SweptSources* swept)
      : retention_(retention), now_(std::move(now)), swept_(swept) {}
  void SetFineTier(uint32_t measure_id, Tier tier) {
    std::lock_guard<std::mutex> l(mu_);
    auto next = std::make_shared<FineTiers>(fine_tiers_ ? *fine_tiers_ : FineTiers());
    (*next)[measure_id] = tier;
    fine_tiers_ = std::move(next);
  }
  // How long a series' partials are kept, seconds; 0 = forever (or not
  // known yet: a fine tier before the catalog is bound).
  int64_t KeepSeconds(Tier tier, uint32_t measure_id) const {
    if (tier == Tier::kFine) {
      std::shared_ptr<const FineTiers> tiers;
      {
        std::lock_guard<std::mutex> l(mu_);
        tiers = fine_tiers_;
      }
      if (!tiers) return 0;
      const auto it = tiers->find(measure_id);
      if (it != tiers->end()) tier = it->second;
    }
    return std::max<int64_t>(0, retention_[static_cast<size_t>(tier)]);
  }
  // Whether a bucket of a series kept `keep` seconds has expired at `now`
  // (seconds). bucket is the bucket's start; a day bucket ends a day later
  // at most.
  static bool Expired(int64_t bucket, int64_t keep, int64_t now) {
    return keep > 0 && bucket + kDaySeconds < now - keep;
  }
  int64_t Now() const { return now_(); }

  bool Filter(int /*level*/, const rocksdb::Slice& key, const rocksdb::Slice& /*value*/, std::string* /*new_value*/,
              bool* /*value_changed*/) const override {
    AggKeyParts parts;
    if (!ParseAggKey(std::string_view(key.data(), key.size()), &parts)) return false;
    const int64_t keep = KeepSeconds(parts.tier, parts.measure_id);
    if (keep <= 0 || !Expired(parts.bucket, keep, now_())) return false;
    return !swept_->Contains(parts.source);
  }
  bool FilterMergeOperand(int level, const rocksdb::Slice& key, const rocksdb::Slice& operand) const override {
    std::string unused_value;
    bool unused_changed = false;
    return Filter(level, key, operand, &unused_value, &unused_changed);
  }
  const char* Name() const override { return "kpistream.Retention.v1"; }

 private:
  std::array<int64_t, 3> retention_;
  std::function<int64_t()> now_;
  const SweptSources* swept_;
  mutable std::mutex mu_;
  std::shared_ptr<const FineTiers> fine_tiers_;  // guarded by mu_; null until bound
};

// Drops remembered event ids older than their source's horizon (the
// engine's de-duplication window behind the partition's newest event). The
// engine ignores such ids anyway, so when compaction runs never changes what
// counts as a duplicate. Ids of swept sources are left to
// Store::CollectExpired.
class EventIdFilter : public rocksdb::CompactionFilter {
 public:
  explicit EventIdFilter(const SweptSources* swept) : swept_(swept) {}
  void SetHorizon(uint64_t source, int64_t horizon_ms) {
    std::lock_guard<std::mutex> l(mu_);
    horizons_[source] = horizon_ms;
  }
  std::optional<int64_t> Horizon(uint64_t source) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = horizons_.find(source);
    if (it == horizons_.end()) return std::nullopt;
    return it->second;
  }
  bool Filter(int /*level*/, const rocksdb::Slice& key, const rocksdb::Slice& value, std::string* /*new_value*/,
              bool* /*value_changed*/) const override {
    if (key.size() < 8 || value.size() != 16) return false;
    int64_t event_ms;
    std::memcpy(&event_ms, value.data(), 8);
    const uint64_t source = GetU64BE(key.data());
    const auto horizon = Horizon(source);
    return horizon && event_ms < *horizon && !swept_->Contains(source);
  }
  const char* Name() const override { return "kpistream.EventIdHorizon.v1"; }

 private:
  const SweptSources* swept_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, int64_t> horizons_ ABSL_GUARDED_BY(mu_);
};

int64_t WallClockSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct WriteBatch::Rep {
  rocksdb::WriteBatch wb;
  rocksdb::ColumnFamilyHandle* agg;
  rocksdb::ColumnFamilyHandle* offsets;
  rocksdb::ColumnFamilyHandle* groups;
  rocksdb::ColumnFamilyHandle* event_ids;
  rocksdb::ColumnFamilyHandle* meta;
  // The column family of a source-scoped keyspace (agg, offsets, groups,
  // event_ids); meta and alerts have writers of their own.
  rocksdb::ColumnFamilyHandle* SourceCf(Keyspace keyspace) const {
    switch (keyspace) {
      case Keyspace::kAgg:
        return agg;
      case Keyspace::kOffsets:
        return offsets;
      case Keyspace::kGroups:
        return groups;
      case Keyspace::kEventIds:
        return event_ids;
      case Keyspace::kMeta:
      case Keyspace::kAlerts:
        break;
    }
    std::abort();
  }
};

struct Store::Rep {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;  // indexed by Keyspace
  std::shared_ptr<rocksdb::Cache> cache;
  SweptSources swept;
  std::unique_ptr<RetentionFilter> retention;
  std::unique_ptr<EventIdFilter> event_id_filter = std::make_unique<EventIdFilter>(&swept);
  StoreOptions options;
  rocksdb::WriteOptions write_options;
  std::mutex id_mu;
  std::atomic<bool> write_failed{false};

  rocksdb::ColumnFamilyHandle* cf(Keyspace k) const { return cfs[static_cast<size_t>(k)]; }

  // Scans one partial series at the read options' snapshot (none: the
  // iterator's own implicit one).
  absl::Status ScanAt(rocksdb::ReadOptions ro, Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket_begin,
                      int64_t bucket_end, const Store::ScanFn& fn) const {
    const std::string prefix = SeriesPrefix(tier, measure_id, source);
    std::string start = prefix;
    PutU64BE(&start, FlipSign(bucket_begin));
    std::string limit = prefix;
    PutU64BE(&limit, FlipSign(bucket_end));
    rocksdb::Slice upper(limit);
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf(Keyspace::kAgg)));
    for (it->Seek(start); it->Valid(); it->Next()) {
      AggKeyParts parts;
      const std::string_view key(it->key().data(), it->key().size());
      if (!ParseAggKey(key, &parts)) return absl::DataLossError("malformed partial key");
      fn(parts.bucket, parts.group_key, std::string_view(it->value().data(), it->value().size()));
    }
    return FromRocks(it->status(), "scanning partials");
  }

  // After a failed write or flush (disk full, I/O error) RocksDB refuses
  // every write until Resume() clears its background error. Resume first
  // when the last write failed, so the first commit after space returns
  // goes through; until then each attempt fails cleanly and nothing is
  // acknowledged. (Resume is a no-op when there is no error.)
  absl::Status Write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* wb, std::string_view what) {
    if (options.min_free_bytes > 0) {
      struct statvfs fs;
      if (::statvfs(options.path.c_str(), &fs) == 0) {
        const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
        if (free_bytes < options.min_free_bytes) {
          return absl::UnavailableError(fmt::format(
              "{}: disk almost full: {} MiB free for {}, below the {} MiB kept free for RocksDB's flushes and "
              "compactions; free space (or grow the volume) and kpid resumes by itself",
              what, free_bytes >> 20, options.path, options.min_free_bytes >> 20));
        }
      }
    }
    if (write_failed.load()) {
      auto r = db->Resume();
      if (r.IsBusy()) {
        return absl::UnavailableError(
            fmt::format("{}: the store is recovering from an earlier write error (disk full? I/O error?)", what));
      }
      if (!r.ok()) return FromRocks(r, fmt::format("{} (writes stopped after an earlier error; resume failed)", what));
      write_failed = false;
    }
    auto s = db->Write(wo, wb);
    if (!s.ok()) write_failed = true;
    return FromRocks(s, what);
  }
  ~Rep() {
    for (auto* h : cfs) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    if (db) db->Close().PermitUncheckedError();
  }
};

WriteBatch::WriteBatch(const Store& store) : rep_(std::make_unique<Rep>()) {
  rep_->agg = store.rep_->cf(Keyspace::kAgg);
  rep_->offsets = store.rep_->cf(Keyspace::kOffsets);
  rep_->groups = store.rep_->cf(Keyspace::kGroups);
  rep_->event_ids = store.rep_->cf(Keyspace::kEventIds);
  rep_->meta = store.rep_->cf(Keyspace::kMeta);
}
WriteBatch::~WriteBatch() = default;
size_t WriteBatch::Count() const { return rep_->wb.Count(); }
size_t WriteBatch::ByteSize() const { return rep_->wb.GetDataSize(); }
void WriteBatch::Clear() { rep_->wb.Clear(); }

void WriteBatch::MergePartial(std::string_view key, std::string_view encoded) {
  rep_->wb.Merge(rep_->agg, rocksdb::Slice(key.data(), key.size()), rocksdb::Slice(encoded.data(), encoded.size()))
      .PermitUncheckedError();
}

void WriteBatch::PutOffset(uint64_t source, int64_t next_offset, int64_t newest_event_ms) {
  char v[16];
  std::memcpy(v, &next_offset, 8);
  std::memcpy(v + 8, &newest_event_ms, 8);
  rep_->wb.Put(rep_->offsets, OffsetKey(source), rocksdb::Slice(v, 16)).PermitUncheckedError();
}

void WriteBatch::PutKeptValue(uint64_t source, uint32_t dimension_id, std::string_view value) {
  rep_->wb.Put(rep_->groups, KeptValueKey(source, dimension_id, value), rocksdb::Slice()).PermitUncheckedError();
}

void WriteBatch::PutKeptCount(uint64_t source, uint32_t dimension_id, uint32_t count) {
  char v[4];
  std::memcpy(v, &count, 4);
  rep_->wb.Put(rep_->groups, KeptCountKey(source, dimension_id), rocksdb::Slice(v, 4)).PermitUncheckedError();
}

void WriteBatch::PutEventId(uint64_t source, std::string_view event_id, int64_t event_ms, int64_t offset) {
  char v[16];
  std::memcpy(v, &event_ms, 8);
  std::memcpy(v + 8, &offset, 8);
  rep_->wb.Put(rep_->event_ids, EventIdKey(source, event_id), rocksdb::Slice(v, 16)).PermitUncheckedError();
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("state dir is empty");
  auto rep = std::make_unique<Rep>();
  rep->cache = rocksdb::NewLRUCache(options.cache_bytes);
  rep->options = options;
  if (!rep->options.now_s) rep->options.now_s = WallClockSeconds;
  rep->retention = std::make_unique<RetentionFilter>(
      std::array<int64_t, 3>{options.retention_fine_s, options.retention_hour_s, options.retention_day_s},
      options.now_s ? options.now_s : WallClockSeconds, &rep->swept);

  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  db_opts.write_buffer_manager = std::make_shared<rocksdb::WriteBufferManager>(options.cache_bytes / 2, rep->cache);
  db_opts.max_background_jobs = 2;
  db_opts.keep_log_file_num = 4;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rep->cache;
  table.cache_index_and_filter_blocks = true;

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const char* name : kKeyspaceNames) {
    rocksdb::ColumnFamilyOptions cf;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    cf.write_buffer_size = 32ull << 20;
    if (std::string_view(name) == "agg") {
      cf.merge_operator = std::make_shared<PartialMergeOperator>();
      cf.compression = rocksdb::kLZ4Compression;
      cf.compaction_filter = rep->retention.get();
    }
    if (std::string_view(name) == "groups") {
      // Most lookups are for groups never seen: a bloom filter answers them.
      // Its blocks stay with the table readers (~1.25 bytes per group key)
      // instead of the block cache, where evictions made every lookup read
      // a multi-megabyte filter block again.
      rocksdb::BlockBasedTableOptions t = table;
      t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
      t.cache_index_and_filter_blocks = false;
      cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
    }
    if (std::string_view(name) == "event_ids") {
      // One lookup per applied event, nearly all for ids never seen: bloom
      // filters on the tables and on the memtable answer those without
      // reading a data block. The filters and indexes are partitioned and
      // kept in the block cache: whole-table filters outside it grew with
      // the ids remembered (33 MiB at 25M ids, unbounded by
      // memory_budget_mb), and partitions of a few KiB are cheap to load
      // again after an eviction. The top-level index of each table stays
      // pinned.
      rocksdb::BlockBasedTableOptions t = table;
      t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
      t.cache_index_and_filter_blocks = true;
      t.cache_index_and_filter_blocks_with_high_priority = true;
      t.partition_filters = true;
      t.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
      t.metadata_block_size = 4096;
      t.pin_top_level_index_and_filter = true;
      cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
      // Small memtables: ids arrive at the event rate, and flushing them
      // often keeps the memory they take between flushes small.
      cf.write_buffer_size = 8ull << 20;
      cf.memtable_prefix_bloom_size_ratio = 0.1;
      cf.memtable_whole_key_filtering = true;
      cf.compression = rocksdb::kLZ4Compression;
      cf.compaction_filter = rep->event_id_filter.get();
    }
    // RocksDB requires the default column family; "agg" plays that role.
    descs.emplace_back(std::string_view(name) == "agg" ? rocksdb::kDefaultColumnFamilyName : std::string(name), cf);
  }
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(db_opts, options.path, descs, &rep->cfs, &raw);
  if (!s.ok()) return FromRocks(s, fmt::format("opening state dir {}", options.path));
  rep->db.reset(raw);
  rep->write_options.sync = options.sync_commits;
  return std::unique_ptr<Store>(new Store(std::move(rep)));
}

Store::Store(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Store::~Store() = default;

absl::StatusOr<uint32_t> Store::IdFor(std::string_view kind, std::string_view name) {
  std::lock_guard<std::mutex> lock(rep_->id_mu);
  return IdForLocked(kind, name);
}

absl::StatusOr<Store::SeriesId> Store::SeriesIdFor(std::string_view kind, std::string_view name,
                                                   std::string_view shape) {
  std::lock_guard<std::mutex> lock(rep_->id_mu);
  const std::string shape_key = fmt::format("{}.shape/{}", kind, name);
  std::string first;
  auto s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kMeta), shape_key, &first);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading a series shape");
  SeriesId out;
  if (s.IsNotFound()) {
    // The name's first shape (or a store from before shapes were kept):
    // it owns the plain id, so existing history stays where it is.
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = rep_->db->Put(wo, rep_->cf(Keyspace::kMeta), shape_key, rocksdb::Slice(shape.data(), shape.size()));
    if (!s.ok()) return FromRocks(s, "recording a series shape");
    first = std::string(shape);
  }
  auto id = first == shape ? IdForLocked(kind, name) : IdForLocked(kind, fmt::format("{}@{}", name, shape));
  if (!id.ok()) return id.status();
  out.id = *id;
  out.first_shape = first;
  return out;
}

absl::StatusOr<uint32_t> Store::IdForLocked(std::string_view kind, std::string_view name) {
  const std::string key = fmt::format("{}/{}", kind, name);
  std::string v;
  auto s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kMeta), key, &v);
  if (s.ok() && v.size() == 4) {
    uint32_t id;
    std::memcpy(&id, v.data(), 4);
    return id;
  }
  if (!s.IsNotFound()) return FromRocks(s, "reading name id");
  // Next id for this kind: kept under "<kind>#next".
  const std::string next_key = fmt::format("{}#next", kind);
  uint32_t next = 1;
  s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kMeta), next_key, &v);
  if (s.ok() && v.size() == 4) std::memcpy(&next, v.data(), 4);
  rocksdb::WriteBatch wb;
  char buf[4];
  std::memcpy(buf, &next, 4);
  wb.Put(rep_->cf(Keyspace::kMeta), key, rocksdb::Slice(buf, 4));
  const uint32_t after = next + 1;
  std::memcpy(buf, &after, 4);
  wb.Put(rep_->cf(Keyspace::kMeta), next_key, rocksdb::Slice(buf, 4));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto st = rep_->Write(wo, &wb, "assigning name id"); !st.ok()) return st;
  return next;
}

void Store::SetFineTier(uint32_t measure_id, Tier tier) { rep_->retention->SetFineTier(measure_id, tier); }

absl::Status Store::Commit(WriteBatch* batch) {
  return rep_->Write(rep_->write_options, &batch->rep_->wb, "committing state");
}

uint64_t Store::LatestSequence() const { return rep_->db->GetLatestSequenceNumber(); }

absl::Status Store::ProbeWrite() {
  rocksdb::WriteBatch wb;
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  char buf[8];
  std::memcpy(buf, &now, 8);
  wb.Put(rep_->cf(Keyspace::kMeta), "health/write-probe", rocksdb::Slice(buf, 8)).PermitUncheckedError();
  return rep_->Write(rep_->write_options, &wb, "probing the store");
}

absl::StatusOr<std::optional<Store::SourcePosition>> Store::ReadOffset(uint64_t source) const {
  std::string v;
  auto s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kOffsets), OffsetKey(source), &v);
  if (s.IsNotFound()) return std::optional<SourcePosition>();
  if (!s.ok()) return FromRocks(s, "reading offset");
  if (v.size() != 16) return absl::DataLossError("offset record has wrong size");
  SourcePosition p;
  std::memcpy(&p.next_offset, v.data(), 8);
  std::memcpy(&p.newest_event_ms, v.data() + 8, 8);
  return std::optional<SourcePosition>(p);
}

absl::StatusOr<bool> Store::HasKeptValue(uint64_t source, uint32_t dimension_id, std::string_view value) const {
  std::string v;
  auto s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kGroups), KeptValueKey(source, dimension_id, value), &v);
  if (s.IsNotFound()) return false;
  if (!s.ok()) return FromRocks(s, "looking up an admitted group");
  return true;
}

absl::StatusOr<std::optional<Store::AppliedEvent>> Store::LookupEventId(uint64_t source,
                                                                        std::string_view event_id) const {
  return LookupEventIdKey(EventIdKey(source, event_id));
}

absl::StatusOr<std::optional<Store::AppliedEvent>> Store::LookupEventIdKey(std::string_view key) const {
  rocksdb::PinnableSlice v;
  auto s =
      rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kEventIds), rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<AppliedEvent>();
  if (!s.ok()) return FromRocks(s, "looking up an event id");
  if (v.size() != 16) return absl::DataLossError("malformed event-id record");
  AppliedEvent e;
  std::memcpy(&e.event_ms, v.data(), 8);
  std::memcpy(&e.offset, v.data() + 8, 8);
  return std::optional<AppliedEvent>(e);
}

void Store::SetEventIdHorizon(uint64_t source, int64_t horizon_ms) {
  rep_->event_id_filter->SetHorizon(source, horizon_ms);
}

void Store::SetExpiryBySweep(uint64_t source, bool on) { rep_->swept.Set(source, on); }

absl::Status Store::CollectExpired(uint64_t source, const ExpiryLimits& limits, ExpiryCursor* cursor, WriteBatch* batch,
                                   ExpiryProgress* progress) const {
  *progress = ExpiryProgress();
  // Measure ids are assigned 1, 2, ... ("measure#next" is the next one).
  uint32_t next_measure = 1;
  std::string v;
  auto ms = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kMeta), "measure#next", &v);
  if (!ms.ok() && !ms.IsNotFound()) return FromRocks(ms, "reading the measure ids");
  if (ms.ok() && v.size() == 4) std::memcpy(&next_measure, v.data(), 4);
  const int64_t now = rep_->retention->Now();
  // Visits [from, prefix's end) of a keyspace; stops at the limits (false)
  // or, for partials, at the first retained bucket of the series.
  auto visit = [&](Keyspace ks, const std::string& prefix, const std::string& from, int64_t keep,
                   std::optional<int64_t> horizon) -> absl::StatusOr<bool> {
    std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cf(ks)));
    for (it->Seek(std::max(prefix, from)); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      if (progress->deleted == limits.deletes || progress->visited == limits.visits) {
        cursor->key.assign(key);  // the next call starts here
        return false;
      }
      ++progress->visited;
      if (ks == Keyspace::kAgg) {
        AggKeyParts parts;
        if (!ParseAggKey(key, &parts)) return absl::DataLossError("malformed partial key");
        // A series is in bucket order: the rest is retained.
        if (!RetentionFilter::Expired(parts.bucket, keep, now)) break;
      } else {
        int64_t event_ms = 0;
        if (it->value().size() != 16) return absl::DataLossError("malformed event-id record");
        std::memcpy(&event_ms, it->value().data(), 8);
        if (event_ms >= *horizon) continue;  // ids are in id order, not time order
      }
      batch->Delete(ks, key);
      ++progress->deleted;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "collecting expired state");
    return true;
  };
  if (!cursor->event_ids) {
    // Series prefixes sort as (tier, measure id), the order visited here.
    const std::string from_series = cursor->key.substr(0, std::min(cursor->key.size(), kSeriesPrefixSize));
    for (auto tier : {Tier::kFine, Tier::kHour, Tier::kDay}) {
      for (uint32_t id = 1; id < next_measure; ++id) {
        const std::string prefix = SeriesPrefix(tier, id, source);
        if (prefix < from_series) continue;  // visited earlier in the pass
        const int64_t keep = rep_->retention->KeepSeconds(tier, id);
        if (keep <= 0) continue;
        auto finished = visit(Keyspace::kAgg, prefix, prefix == from_series ? cursor->key : prefix, keep, std::nullopt);
        if (!finished.ok()) return finished.status();
        if (!*finished) return absl::OkStatus();
      }
    }
    cursor->event_ids = true;
    cursor->key.clear();
  }
  if (const auto horizon = rep_->event_id_filter->Horizon(source)) {
    auto finished = visit(Keyspace::kEventIds, OffsetKey(source), cursor->key, 0, horizon);
    if (!finished.ok()) return finished.status();
    if (!*finished) return absl::OkStatus();
  }
  progress->done = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<uint32_t, uint32_t>>> Store::ReadKeptCounts(uint64_t source) const {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  const std::string prefix = KeptCountPrefix(source);
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cf(Keyspace::kGroups)));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (it->key().size() != prefix.size() + 4 || it->value().size() != 4) {
      return absl::DataLossError("malformed admitted-group count");
    }
    uint32_t n;
    std::memcpy(&n, it->value().data(), 4);
    out.emplace_back(GetU32BE(it->key().data() + prefix.size()), n);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading admitted-group counts");
  return out;
}

absl::StatusOr<std::vector<std::pair<uint64_t, int64_t>>> Store::ListOffsets() const {
  std::vector<std::pair<uint64_t, int64_t>> out;
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cf(Keyspace::kOffsets)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    uint64_t source;
    if (!ParseOffsetKey(std::string_view(it->key().data(), it->key().size()), &source) || it->value().size() != 16) {
      return absl::DataLossError("malformed offset record");
    }
    int64_t off;
    std::memcpy(&off, it->value().data(), 8);
    out.emplace_back(source, off);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing offsets");
  return out;
}

absl::Status Store::Scan(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket_begin, int64_t bucket_end,
                         const ScanFn& fn) const {
  return rep_->ScanAt(rocksdb::ReadOptions(), tier, measure_id, source, bucket_begin, bucket_end, fn);
}

struct ReadView::Rep {
  const Store::Rep* store;
  const rocksdb::Snapshot* snapshot;
  rocksdb::ReadOptions Options() const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    return ro;
  }
};

ReadView::ReadView(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
ReadView::~ReadView() { rep_->store->db->ReleaseSnapshot(rep_->snapshot); }

uint64_t ReadView::sequence() const { return rep_->snapshot->GetSequenceNumber(); }

absl::StatusOr<std::vector<ReadView::SourceState>> ReadView::Sources() const {
  std::vector<SourceState> out;
  std::unique_ptr<rocksdb::Iterator> it(
      rep_->store->db->NewIterator(rep_->Options(), rep_->store->cf(Keyspace::kOffsets)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    SourceState s;
    if (!ParseOffsetKey(std::string_view(it->key().data(), it->key().size()), &s.source) || it->value().size() != 16) {
      return absl::DataLossError("malformed offset record");
    }
    std::memcpy(&s.next_offset, it->value().data(), 8);
    std::memcpy(&s.newest_event_ms, it->value().data() + 8, 8);
    out.push_back(s);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing offsets");
  return out;
}

absl::Status ReadView::Scan(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket_begin, int64_t bucket_end,
                            const ScanFn& fn) const {
  return rep_->store->ScanAt(rep_->Options(), tier, measure_id, source, bucket_begin, bucket_end, fn);
}

std::unique_ptr<ReadView> Store::View() const {
  auto rep = std::make_unique<ReadView::Rep>();
  rep->store = rep_.get();
  rep->snapshot = rep_->db->GetSnapshot();
  return std::unique_ptr<ReadView>(new ReadView(std::move(rep)));
}

const StoreOptions& Store::options() const { return rep_->options; }

absl::Status Store::CompactForTest() {
  rocksdb::CompactRangeOptions o;
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (auto k : {Keyspace::kAgg, Keyspace::kEventIds}) {
    if (auto st = FromRocks(rep_->db->CompactRange(o, rep_->cf(k), nullptr, nullptr), "compacting"); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

namespace {

std::string ChangelogOffsetKey(uint64_t source) {
  std::string k = "changelog/";
  PutU64BE(&k, source);
  return k;
}

// The keyspaces a source's state lives in, in the order changes are shipped.
constexpr Keyspace kSourceKeyspaces[] = {Keyspace::kAgg, Keyspace::kGroups, Keyspace::kEventIds, Keyspace::kOffsets};

}  // namespace

void WriteBatch::Put(Keyspace keyspace, std::string_view key, std::string_view value) {
  rep_->wb
      .Put(rep_->SourceCf(keyspace), rocksdb::Slice(key.data(), key.size()), rocksdb::Slice(value.data(), value.size()))
      .PermitUncheckedError();
}

void WriteBatch::Delete(Keyspace keyspace, std::string_view key) {
  rep_->wb.Delete(rep_->SourceCf(keyspace), rocksdb::Slice(key.data(), key.size())).PermitUncheckedError();
}

void WriteBatch::PutChangelogOffset(uint64_t source, int64_t next_offset) {
  char v[8];
  std::memcpy(v, &next_offset, 8);
  rep_->wb.Put(rep_->meta, ChangelogOffsetKey(source), rocksdb::Slice(v, 8)).PermitUncheckedError();
}

absl::Status Store::ResolveChanges(WriteBatch* batch, const ChangeFn& fn) const {
  // The batch's writes in order, one entry per key (a later write of a key
  // folds into its entry).
  struct Entry {
    Keyspace keyspace;
    std::string key;
    std::optional<std::string> value;  // nullopt: deleted
  };
  struct Collector : rocksdb::WriteBatch::Handler {
    const Store::Rep* store = nullptr;
    std::vector<Entry> entries;
    std::unordered_map<std::string, size_t> index;  // keyspace byte + key: entry index
    absl::Status error;
    std::optional<Keyspace> KeyspaceOf(uint32_t cf_id) const {
      for (auto k : kSourceKeyspaces) {
        if (store->cf(k)->GetID() == cf_id) return k;
      }
      return std::nullopt;
    }
    static std::string IndexKey(Keyspace ks, const rocksdb::Slice& key) {
      std::string k(1, static_cast<char>(ks));
      k.append(key.data(), key.size());
      return k;
    }
    void Set(Keyspace ks, const rocksdb::Slice& key, std::optional<std::string> value) {
      auto [it, inserted] = index.emplace(IndexKey(ks, key), entries.size());
      if (!inserted) {
        entries[it->second].value = std::move(value);
        return;
      }
      entries.push_back({ks, key.ToString(), std::move(value)});
    }
    rocksdb::Status PutCF(uint32_t cf_id, const rocksdb::Slice& key, const rocksdb::Slice& value) override {
      const auto ks = KeyspaceOf(cf_id);
      if (!ks) return rocksdb::Status::OK();  // meta: not shipped
      Set(*ks, key, value.ToString());
      return rocksdb::Status::OK();
    }
    rocksdb::Status DeleteCF(uint32_t cf_id, const rocksdb::Slice& key) override {
      const auto ks = KeyspaceOf(cf_id);
      if (!ks) return rocksdb::Status::OK();
      Set(*ks, key, std::nullopt);
      return rocksdb::Status::OK();
    }
    rocksdb::Status MergeCF(uint32_t cf_id, const rocksdb::Slice& key, const rocksdb::Slice& delta) override {
      if (KeyspaceOf(cf_id) != Keyspace::kAgg) {
        error = absl::InternalError("a merge outside the partials keyspace");
        return rocksdb::Status::Aborted();
      }
      std::string merged;
      if (auto it = index.find(IndexKey(Keyspace::kAgg, key)); it != index.end()) {
        auto& value = entries[it->second].value;
        if (!value) {
          value = delta.ToString();  // deleted earlier in the batch: the delta alone
        } else if (!MergeEncoded(*value, std::string_view(delta.data(), delta.size()), &merged)) {
          error = absl::DataLossError("a batched partial cannot be decoded");
          return rocksdb::Status::Aborted();
        } else {
          value = std::move(merged);
        }
        return rocksdb::Status::OK();
      }
      std::string current;
      auto s = store->db->Get(rocksdb::ReadOptions(), store->cf(Keyspace::kAgg), key, &current);
      if (s.IsNotFound()) {
        merged = delta.ToString();
      } else if (!s.ok()) {
        error = FromRocks(s, "reading a partial for the changelog");
        return rocksdb::Status::Aborted();
      } else if (!MergeEncoded(current, std::string_view(delta.data(), delta.size()), &merged)) {
        error = absl::DataLossError("a stored partial cannot be decoded");
        return rocksdb::Status::Aborted();
      }
      Set(Keyspace::kAgg, key, std::move(merged));
      return rocksdb::Status::OK();
    }
  } collector;
  collector.store = rep_.get();
  // Meta writes (changelog offsets) are kept as they are.
  struct MetaCopier : rocksdb::WriteBatch::Handler {
    uint32_t meta_id = 0;
    rocksdb::ColumnFamilyHandle* meta = nullptr;
    rocksdb::WriteBatch* out = nullptr;
    rocksdb::Status PutCF(uint32_t cf_id, const rocksdb::Slice& key, const rocksdb::Slice& value) override {
      if (cf_id == meta_id) out->Put(meta, key, value).PermitUncheckedError();
      return rocksdb::Status::OK();
    }
    rocksdb::Status MergeCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
      return rocksdb::Status::OK();
    }
    rocksdb::Status DeleteCF(uint32_t, const rocksdb::Slice&) override { return rocksdb::Status::OK(); }
  };
  auto s = batch->rep_->wb.Iterate(&collector);
  if (!collector.error.ok()) return collector.error;
  if (!s.ok()) return FromRocks(s, "reading a commit batch");
  rocksdb::WriteBatch rewritten;
  MetaCopier meta;
  meta.meta_id = rep_->cf(Keyspace::kMeta)->GetID();
  meta.meta = rep_->cf(Keyspace::kMeta);
  meta.out = &rewritten;
  if (auto ms = batch->rep_->wb.Iterate(&meta); !ms.ok()) return FromRocks(ms, "reading a commit batch");
  for (const auto& e : collector.entries) {
    if (e.value) {
      rewritten.Put(rep_->cf(e.keyspace), e.key, *e.value).PermitUncheckedError();
      fn(e.keyspace, e.key, *e.value);
    } else {
      rewritten.Delete(rep_->cf(e.keyspace), e.key).PermitUncheckedError();
      fn(e.keyspace, e.key, std::string_view());
    }
  }
  batch->rep_->wb = std::move(rewritten);
  return absl::OkStatus();
}

absl::Status Store::ScanSource(uint64_t source, const ChangeFn& fn) const {
  rocksdb::ReadOptions ro;
  const rocksdb::Snapshot* snap = rep_->db->GetSnapshot();
  ro.snapshot = snap;
  absl::Status result;
  auto scan_prefix = [&](Keyspace ks, const std::string& prefix) {
    std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(ro, rep_->cf(ks)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      fn(ks, std::string_view(it->key().data(), it->key().size()),
         std::string_view(it->value().data(), it->value().size()));
    }
    if (!it->status().ok() && result.ok()) result = FromRocks(it->status(), "scanning a source");
  };
  // Measure ids are assigned 1, 2, ... ("measure#next" is the next one).
  uint32_t next_measure = 1;
  std::string v;
  if (rep_->db->Get(ro, rep_->cf(Keyspace::kMeta), "measure#next", &v).ok() && v.size() == 4) {
    std::memcpy(&next_measure, v.data(), 4);
  }
  for (auto tier : {Tier::kFine, Tier::kHour, Tier::kDay}) {
    for (uint32_t id = 1; id < next_measure; ++id) scan_prefix(Keyspace::kAgg, SeriesPrefix(tier, id, source));
  }
  scan_prefix(Keyspace::kGroups, KeptValueKey(source, 0, "").substr(0, 9));
  scan_prefix(Keyspace::kGroups, KeptCountPrefix(source));
  scan_prefix(Keyspace::kEventIds, OffsetKey(source));
  scan_prefix(Keyspace::kOffsets, OffsetKey(source));
  rep_->db->ReleaseSnapshot(snap);
  return result;
}

absl::Status Store::DropSource(uint64_t source) {
  rocksdb::WriteBatch wb;
  auto st = ScanSource(source, [&](Keyspace ks, std::string_view key, std::string_view) {
    wb.Delete(rep_->cf(ks), rocksdb::Slice(key.data(), key.size())).PermitUncheckedError();
  });
  if (!st.ok()) return st;
  wb.Delete(rep_->cf(Keyspace::kMeta), ChangelogOffsetKey(source)).PermitUncheckedError();
  return rep_->Write(rep_->write_options, &wb, "dropping a partition's state");
}

absl::StatusOr<std::optional<int64_t>> Store::ReadChangelogOffset(uint64_t source) const {
  std::string v;
  auto s = rep_->db->Get(rocksdb::ReadOptions(), rep_->cf(Keyspace::kMeta), ChangelogOffsetKey(source), &v);
  if (s.IsNotFound()) return std::optional<int64_t>();
  if (!s.ok()) return FromRocks(s, "reading a changelog offset");
  if (v.size() != 8) return absl::DataLossError("changelog offset record has wrong size");
  int64_t o;
  std::memcpy(&o, v.data(), 8);
  return std::optional<int64_t>(o);
}

absl::Status Store::WriteAlerts(const std::vector<AlertWrite>& writes) {
  rocksdb::WriteBatch wb;
  for (const auto& [key, value] : writes) {
    if (value) {
      wb.Put(rep_->cf(Keyspace::kAlerts), key, *value).PermitUncheckedError();
    } else {
      wb.Delete(rep_->cf(Keyspace::kAlerts), key).PermitUncheckedError();
    }
  }
  return rep_->Write(rep_->write_options, &wb, "writing alert state");
}

absl::Status Store::ScanAlerts(std::string_view prefix, const AlertScanFn& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(rocksdb::ReadOptions(), rep_->cf(Keyspace::kAlerts)));
  const rocksdb::Slice p(prefix.data(), prefix.size());
  for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
    fn(std::string_view(it->key().data(), it->key().size()), std::string_view(it->value().data(), it->value().size()));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading alert state");
  return absl::OkStatus();
}

StoreStats Store::Stats() const {
  StoreStats st;
  auto get = [&](const std::string& prop, uint64_t* out) {
    uint64_t total = 0;
    for (auto* cf : rep_->cfs) {
      uint64_t v = 0;
      if (rep_->db->GetIntProperty(cf, prop, &v)) total += v;
    }
    *out = total;
  };
  get(rocksdb::DB::Properties::kEstimateLiveDataSize, &st.live_data_bytes);
  get(rocksdb::DB::Properties::kTotalSstFilesSize, &st.sst_files_bytes);
  get(rocksdb::DB::Properties::kCurSizeAllMemTables, &st.memtable_bytes);
  get(rocksdb::DB::Properties::kEstimatePendingCompactionBytes, &st.pending_compaction_bytes);
  get(rocksdb::DB::Properties::kEstimateNumKeys, &st.estimated_keys);
  get(rocksdb::DB::Properties::kEstimateTableReadersMem, &st.table_readers_bytes);
  uint64_t running = 0;
  rep_->db->GetIntProperty(rocksdb::DB::Properties::kNumRunningCompactions, &running);
  st.running_compactions = running;
  st.block_cache_usage_bytes = rep_->cache->GetUsage();
  return st;
}

}  // namespace kpistream::state
