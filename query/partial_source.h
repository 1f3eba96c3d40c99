// Where a query's partial aggregates come from: the local state store now;
// peers' stores later (scale-out), merged the same way since every partial
// is mergeable and keyed by the partition it came from.
//
// Thread-safety: sources and snapshots are safe to use from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/window.h"
#include "state/store.h"

namespace kpistream::query {

// Where one partition stands in an answer: the offsets and the event time
// the answer reflects (a consistency token lists these).
struct PartitionPosition {
  uint64_t source = 0;          // state::SourceId(topic id, partition), in the answering replica's store
  int64_t next_offset = 0;      // the next Kafka offset not yet in the answer
  int64_t newest_event_ms = 0;  // the partition's event-time watermark (INT64_MIN: none)
  // With ownership (replicas): "<topic>[<partition>]", and the replica
  // that answered for it (its id; services/cluster.h). Empty otherwise.
  std::string partition;
  std::string owner;
};

// The buckets of one measure a query will read (QueryPlan's pieces).
struct MeasurePieces {
  uint32_t measure_id = 0;
  std::vector<kpi::WindowPiece> pieces;
};

// Called for every stored partial of a scan: its bucket start (seconds),
// encoded group key and encoded value.
using BucketVisitor = std::function<void(int64_t bucket, std::string_view group_key, std::string_view encoded)>;

// Called for every partial read: its encoded group key (state::keys.h) and
// encoded value (state/aggregate.h). Returns false on a malformed partial.
using PartialVisitor = std::function<bool(std::string_view group_key, std::string_view encoded)>;

// One consistent read: every Collect sees the same commit, and positions()
// are exactly the offsets that commit reflects.
class PartialSnapshot {
 public:
  virtual ~PartialSnapshot() = default;
  virtual uint64_t sequence() const = 0;
  virtual const std::vector<PartitionPosition>& positions() const = 0;
  // Partitions the snapshot does not hold ("<topic>[<partition>]"): with
  // several replicas, those another replica (or none, mid-rebalance) owns.
  virtual const std::vector<std::string>& missing() const {
    static const std::vector<std::string> kNone;
    return kNone;
  }
  // Every partial of a measure in the pieces, over every partition.
  // DATA_LOSS on a malformed key or partial.
  [[nodiscard]] virtual absl::Status Collect(uint32_t measure_id, const std::vector<kpi::WindowPiece>& pieces,
                                             const PartialVisitor& visit) const = 0;
  // What the next Collects will read, all at once: a snapshot that reads
  // over the network fetches it in one round trip per peer instead of one
  // per Collect. Optional; local snapshots ignore it.
  [[nodiscard]] virtual absl::Status Prefetch(const std::vector<MeasurePieces>& reads) const {
    (void)reads;
    return absl::OkStatus();
  }
  // Every partial of a measure in buckets [begin, end) of a tier, over the
  // named partitions of positions() only (PartitionPosition::partition),
  // with its bucket: what a peer serves (services/partials_service.h).
  // UNIMPLEMENTED where partitions have no names.
  [[nodiscard]] virtual absl::Status ScanPartitions(const std::vector<std::string>& partitions, kpi::Tier tier,
                                                    uint32_t measure_id, int64_t begin, int64_t end,
                                                    const BucketVisitor& visit) const {
    (void)partitions, (void)tier, (void)measure_id, (void)begin, (void)end, (void)visit;
    return absl::UnimplementedError("this snapshot's partitions have no names");
  }
};

class PartialSource {
 public:
  virtual ~PartialSource() = default;
  // Changes with every commit; equal values mean nothing changed between.
  virtual uint64_t Sequence() const = 0;
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<PartialSnapshot>> Snapshot() const = 0;
};

// Which partitions a replica answers for (scale-out, kafka.changelog): the
// sources it owns and has restored, and the partitions of its input
// topics it does not own. Its store also keeps warm copies of partitions
// it owned before; those must not be counted.
struct Ownership {
  std::vector<uint64_t> sources;
  std::vector<std::string> names;    // like sources: "<topic>[<partition>]"
  std::vector<std::string> missing;  // "<topic>[<partition>]"
  // The epoch this ownership was published at, read with it under one
  // lock, so a snapshot pairs its ownership with the sequence it reports;
  // when unset, the source's epoch function is read (after the ownership).
  std::optional<uint64_t> epoch;
};
using OwnershipFn = std::function<Ownership()>;

// The local store: every partition in it, or (ownership set) the owned
// ones only; epoch changes whenever the ownership may have, so Sequence()
// changes with it. REQUIRES: store outlives the source; ownership and
// epoch are thread-safe.
class LocalPartialSource final : public PartialSource {
 public:
  explicit LocalPartialSource(const state::Store& store, OwnershipFn ownership = nullptr,
                              std::function<uint64_t()> epoch = nullptr)
      : store_(store), ownership_(std::move(ownership)), epoch_(std::move(epoch)) {}
  // Both parts only grow, so their sum changes whenever either does.
  uint64_t Sequence() const override { return store_.LatestSequence() + (epoch_ ? epoch_() : 0); }
  absl::StatusOr<std::unique_ptr<PartialSnapshot>> Snapshot() const override;

 private:
  const state::Store& store_;
  OwnershipFn ownership_;
  std::function<uint64_t()> epoch_;
};

}  // namespace kpistream::query
