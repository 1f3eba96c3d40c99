// One partition's deterministic step, with no Kafka in it: a record's bytes
// and offset in, contributions to the dirty partials out (decode ->
// de-duplicate -> route -> admit -> accumulate), and this partition's part
// of the commit batch. The Kafka loop (engine.h) orchestrates appliers; the
// micro-benchmark, the fuzzers and the tests drive the same step.
//
// Decisions depend only on the partition's records in order and on what was
// committed with its offsets (the event-time watermark, kept dimension
// values, applied event ids), so a replay after a crash decides exactly as
// the first pass did (invariants 1 and 4). The one exception is the bound on
// future event times, judged against the clock (see ApplierOptions).
//
// Thread-safety: not thread-safe; an applier and its scratch belong to the
// consumer thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/accumulator.h"
#include "ingest/admission.h"
#include "ingest/decoder.h"
#include "ingest/router.h"
#include "kpi/catalog.h"
#include "state/store.h"

namespace kpistream::ingest {

// Counters of the step, for /metrics. Lock-free; the exporter only reads.
struct IngestStats {
  explicit IngestStats(const kpi::Catalog& catalog);
  std::atomic<uint64_t> consumed{0};
  std::atomic<uint64_t> applied{0};
  std::array<std::atomic<uint64_t>, kNumRejectReasons> rejected{};
  std::atomic<uint64_t> dedup_lookup_failures{0};
  // Records of a registry source read again later because the schema
  // registry did not answer for their schema id.
  std::atomic<uint64_t> schema_registry_retries{0};
  // Event-time watermarks found more than max_future ahead of the clock at
  // restore (stamped by a wrong clock before such events were refused) and
  // reset to the clock.
  std::atomic<uint64_t> watermarks_reset{0};
  // Per measure (indexed like Catalog::measures): contributions dropped as
  // late; contributions filed under event_time because the measure's `time`
  // field was missing.
  std::vector<std::atomic<uint64_t>> late_by_measure;
  std::vector<std::atomic<uint64_t>> time_fallback_by_measure;
  // Per dimension (indexed like Catalog::dimensions): events whose value
  // went to __other__ (the dimension's cap was reached), and events whose
  // value was longer than max_dimension_bytes and was cut.
  std::vector<std::atomic<uint64_t>> overflow_by_dimension;
  std::vector<std::atomic<uint64_t>> cut_by_dimension;
};

struct ApplierOptions {
  // Exactly once per event: an event whose event_id was already applied
  // from the same partition within this window of the partition's newest
  // event is rejected as `duplicate` (0: off). See EngineOptions.
  int64_t dedup_window_ms = 0;
  // Events stamped further than this ahead of the clock are rejected as
  // `future`: one event from a producer with a wrong clock must not move
  // the partition's event-time watermark (which would make every on-time
  // event late), freshness or the alert clock far ahead. Judged against the
  // wall clock, so a record is judged by when kpid first reads it; a replay
  // much later can judge an event near the bound differently (it is then
  // applied, having been dead-lettered before: see docs/RELIABILITY.md).
  int64_t max_future_ms = 10 * 60 * 1000;
};

// The environment every partition's step shares; it must outlive the
// appliers.
struct ApplyContext {
  const kpi::Catalog* catalog = nullptr;
  const kpi::StateIds* ids = nullptr;
  state::Store* store = nullptr;
  const Router* router = nullptr;
  ApplierOptions options;
  IngestStats* stats = nullptr;
};

// Per-thread working memory of the step.
struct ApplyScratch {
  explicit ApplyScratch(DecoderOptions decoder_options = {}) : decoder(decoder_options) {}
  Decoder decoder;
  RoutedEvent routed;
  std::vector<std::string_view> kept;  // kept value per dimension
  std::vector<char> dim_needed;
  std::vector<char> late;
  std::string key;
  std::string id_key;
};

class PartitionApplier {
 public:
  // Restores the partition's committed position from the store: its next
  // offset (none if nothing was ever committed), event-time watermark and
  // kept-value counts. A watermark further than max_future ahead of now_ms
  // is reset to now_ms (counted; rewritten with the next commit).
  // `mapping` (may be null; must outlive the applier): the partition's
  // topic is a declared source, decoded through it instead of `format`.
  // `topic`: the partition's topic by name (a source's topic may be a
  // pattern; derived event ids name the record's own topic); empty: the
  // mapping's topic.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<PartitionApplier>> Restore(const ApplyContext& ctx,
                                                                                 uint64_t source, kpi::Family family,
                                                                                 PayloadFormat format, int64_t now_ms,
                                                                                 const SourceMapping* mapping = nullptr,
                                                                                 std::string topic = "");

  enum class Outcome {
    kApplied,   // contributions added to the accumulator
    kSkipped,   // below next_offset: already applied
    kRejected,  // *rejection says why; the caller dead-letters the record
    kUnknown,   // the store could not answer (de-duplication): nothing
                // applied, next_offset unchanged; the caller rewinds
    kHeld,      // the record's schema is not available yet (the schema
                // registry did not answer): nothing applied, next_offset
                // unchanged, *rejection says why; the caller holds this
                // partition and reads the record again later
  };
  struct Rejection {
    RejectReason reason;
    std::string detail;
  };
  // `timestamp_ms`: the record's Kafka timestamp (-1: none), which a
  // declared source may take as the event time.
  Outcome Apply(std::string_view payload, int64_t offset, int64_t now_ms, ApplyScratch* scratch, Accumulator* acc,
                Rejection* rejection, int64_t timestamp_ms = -1);

  uint64_t source() const { return source_; }
  kpi::Family family() const { return family_; }
  int64_t next_offset() const { return next_offset_; }
  // The next offset durable in the store; nullopt if none ever was.
  std::optional<int64_t> committed_offset() const { return committed_offset_; }
  // Moves the next offset without applying anything (a start position, the
  // offsets of transaction markers, records lost to retention).
  void SkipTo(int64_t offset) { next_offset_ = offset; }
  // The event-time watermark: the newest event time applied (kNoEvents if
  // none).
  int64_t newest_event_ms() const { return admission_->newest_event_ms(); }

  // Event ids applied since the last commit (memory accounting).
  size_t pending_ids() const { return pending_ids_.size(); }
  static constexpr size_t kPendingIdBytes = 128;  // per entry: node, key, batch bytes (approximate)

  // Whether this partition has something to commit.
  bool dirty() const { return next_offset_ != committed_offset_.value_or(-1) || watermark_reset_; }
  // Appends this partition's part of a commit: next offset and watermark,
  // newly kept dimension values and counts, applied event ids.
  void AppendTo(state::WriteBatch* batch) const;
  // The batch with AppendTo's part is durable.
  void OnCommitted();
  // The batch was lost: back to the committed position (the caller clears
  // the accumulator and seeks back).
  [[nodiscard]] absl::Status Rewind();

 private:
  PartitionApplier(const ApplyContext& ctx, uint64_t source, kpi::Family family, PayloadFormat format)
      : ctx_(ctx), source_(source), family_(family), format_(format) {}
  absl::Status LoadAdmission(int64_t newest_event_ms);
  // nullopt: the store could not answer. Fills *rejection when a duplicate.
  // Which value each dimension of the routed event keeps (its cap on this
  // partition), decided once per event for every measure grouping by it,
  // into scratch->kept; counts overflowing and cut values.
  void AdmitDimensions(ApplyScratch* scratch);
  std::optional<bool> IsDuplicate(const kpi::EventView& ev, int64_t offset, ApplyScratch* scratch,
                                  Rejection* rejection);
  int64_t DedupHorizon() const;

  const ApplyContext& ctx_;
  const uint64_t source_;
  const kpi::Family family_;
  const PayloadFormat format_;
  const SourceMapping* mapping_ = nullptr;
  std::string topic_;  // the partition's topic by name (RecordMeta::topic of a declared source)
  int64_t next_offset_ = 0;
  std::optional<int64_t> committed_offset_;
  bool watermark_reset_ = false;  // reset at restore, not committed yet
  int64_t reset_newest_ms_ = 0;   // what it was reset to
  std::unique_ptr<PartitionAdmission> admission_;
  // Kept since the last commit: (dimension id, value).
  std::vector<std::pair<uint32_t, std::string>> new_values_;
  // Event ids applied since the last commit, by state::EventIdKey.
  struct AppliedId {
    int64_t event_ms;
    int64_t offset;
  };
  std::unordered_map<std::string, AppliedId> pending_ids_;
};

}  // namespace kpistream::ingest
