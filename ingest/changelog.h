// Changelogs: how a partition's state moves between replicas of one
// consumer group (docs/SCALE_OUT.md, "The hand-off protocol").
//
// Partition P of input topic T has partition P of a compacted Kafka topic
// `<group>.<T>.changelog`. Each engine commit that changed P's state is
// one Kafka transaction over the changelog partitions it touched: the full
// value, after the commit, of every key the commit wrote (so compaction
// keeps exactly each key's latest value and a restore never grows with
// history), P's offsets record among them, and the input offsets sent to
// the consumer group in the same transaction (KIP-447: a member fenced by
// a rebalance cannot commit, so a zombie never writes a partition it lost).
// Only after the transaction commits does the local RocksDB batch commit,
// recording the changelog offset it reached; a crash in between leaves the
// local copy behind the changelog, never ahead.
//
// A new owner restores P before applying any of its records: from the
// changelog offset its own copy recorded (a standby, a restart) or from the
// start, reading committed records to the end and setting each key to its
// full value; the offsets record read last is where consumption resumes.
//
// Changelog keys are portable: a replica's store numbers measures and
// dimensions on first use (state::Store::IdFor), so keys name them instead
// and carry no source (the changelog partition is the source):
//   'A' tier(u8) len(u32 BE) "<measure>\0<shape>" bucket(8, as in AggKey) group_key
//   'O'                                   the offsets record
//   'V' len(u32 BE) "<family>.<dimension>" value   a kept dimension value
//   'N' len(u32 BE) "<family>.<dimension>"         its count
//   'E' event_id                          an applied event's id
// Values are the local keyspaces' values unchanged.
//
// Thread-safety: a Changelog and a ChangelogCodec belong to the engine's
// consumer thread.
#pragma once

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/engine.h"
#include "kpi/catalog.h"
#include "state/store.h"

namespace kpistream::ingest {

// The changelog topic of an input topic in a consumer group.
std::string ChangelogTopic(std::string_view group_id, std::string_view input_topic);

class ChangelogCodec {
 public:
  // REQUIRES: catalog, ids and store outlive the codec.
  ChangelogCodec(const kpi::Catalog& catalog, const kpi::StateIds& ids, state::Store* store);

  // The portable key of a local key of a source-scoped keyspace. False for
  // a key that is not shipped: a partial of a measure id the catalog no
  // longer binds (an earlier shape's series, which queries never read).
  bool Encode(state::Keyspace keyspace, std::string_view local_key, std::string* portable) const;
  // The local key, for `source`, of a portable key; binds names this store
  // has not seen yet (Store::SeriesIdFor, IdFor). INVALID_ARGUMENT for a
  // malformed key.
  [[nodiscard]] absl::Status Decode(std::string_view portable, uint64_t source, state::Keyspace* keyspace,
                                    std::string* local_key);

 private:
  state::Store* store_;
  std::unordered_map<uint32_t, std::string> measure_refs_;    // local measure id -> "<name>\0<shape>"
  std::unordered_map<uint32_t, std::string> dimension_refs_;  // local dimension id -> "<family>.<name>"
  std::unordered_map<std::string, uint32_t> measure_ids_;     // decoded refs
  std::unordered_map<std::string, uint32_t> dimension_ids_;
};

struct RestoreResult {
  uint64_t records = 0;
  uint64_t bytes = 0;       // keys + values read
  int64_t next_offset = 0;  // the changelog offset to continue from
};

class Changelog {
 public:
  // A transactional producer (transactional.id "<group>.<instance>": the
  // group.instance.id when set, so a restarted replica fences its
  // predecessor's open transaction at once; else a random one) and a
  // restore consumer that never joins a group, both from options'
  // kafka.properties. transaction.timeout.ms defaults to 10 s: an open
  // transaction of a replica killed mid-commit blocks the partition's
  // readers that long at most.
  // id_suffix and transaction_timeout_ms: a second producer for a long
  // transaction (shipping a whole state) next to the commits' one.
  // shared_id: transactional.id "<group><id_suffix>", the same on every
  // replica, so that whichever creates it last fences all the others (the
  // alert leader's, services/alert_leader.h).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Changelog>> Create(const EngineOptions& options,
                                                                         std::string_view id_suffix = "",
                                                                         int transaction_timeout_ms = 10000,
                                                                         bool shared_id = false);
  ~Changelog();

  // Creates `topic` compacted with `partitions` partitions if it does not
  // exist (the broker's default replication). FAILED_PRECONDITION if it
  // exists with fewer partitions, or, when it holds state, with records
  // that expire (cleanup.policy without compact, or with delete and a
  // finite retention.ms or retention.bytes). Reading the configs of a topic
  // that existed needs DescribeConfigs; when it is refused the check is
  // skipped with a warning. holds_state false: a topic never written (the
  // alert leader's election topic), whose policy does not matter.
  [[nodiscard]] absl::Status EnsureTopic(const std::string& topic, int partitions, bool holds_state = true);

  // One transaction. Begin, Add the records, then Commit with the input
  // offsets (next offset per input partition) sent to the group `consumer`
  // is a member of. Commit returns the next changelog offset after the
  // last record written, per changelog partition. Any error aborts the
  // transaction (nothing of it becomes visible): UNAVAILABLE, retry with a
  // new transaction; ABORTED when the producer is fenced or cannot abort,
  // and can never commit again (the engine stops). consumer null (or no
  // offsets): no offsets are sent, so nothing fences the transaction (a
  // benchmark's).
  [[nodiscard]] absl::Status Begin();
  // A value whose data() is null (a default std::string_view) is written
  // as a tombstone: compaction then drops the key.
  [[nodiscard]] absl::Status Add(const std::string& topic, int32_t partition, std::string_view key,
                                 std::string_view value);
  [[nodiscard]] absl::StatusOr<std::map<TopicPartition, int64_t>> Commit(
      rd_kafka_t* consumer, const rd_kafka_topic_partition_list_t* input_offsets);
  [[nodiscard]] absl::Status Abort();

  // Reads partition `partition` of `topic`, committed records only, from
  // `from` to the end as of the call, calling fn(key, value) for each
  // with its offset (a tombstone's value has a null data(); an empty
  // value's does not). UNAVAILABLE if no record
  // arrives for timeout_ms; fn's error stops the read and is returned.
  using RecordFn = std::function<absl::Status(std::string_view key, std::string_view value, int64_t offset)>;
  [[nodiscard]] absl::StatusOr<RestoreResult> Restore(const std::string& topic, int32_t partition, int64_t from,
                                                      const RecordFn& fn, int timeout_ms = 120000);
  // The partition's [log start, end) offsets, committed records only.
  [[nodiscard]] absl::StatusOr<std::pair<int64_t, int64_t>> Bounds(const std::string& topic, int32_t partition);

 private:
  Changelog() = default;
  absl::Status CheckCompacted(const std::string& topic);
  rd_kafka_t* producer_ = nullptr;
  rd_kafka_t* reader_ = nullptr;
  bool in_transaction_ = false;
  bool broken_ = false;  // an abort failed: no transaction can begin
  std::set<std::string> ensured_;
  // Delivery reports of the current transaction: highest offset written
  // per changelog partition, and the first failure.
  std::map<TopicPartition, int64_t> written_;
  rd_kafka_resp_err_t delivery_error_ = RD_KAFKA_RESP_ERR_NO_ERROR;
};

// Restores partition `partition` of changelog `topic` into `store` as the
// state of `source`, from changelog offset `from` to the end: each record
// decoded (codec) and set, in batches of 20,000 keys, each recording the
// changelog offset it reached: records are full values in log order, so a
// restore cut short (kill -9) resumes there next time. The copy is only
// read again (served) once a restore has reached the end.
[[nodiscard]] absl::StatusOr<RestoreResult> RestoreInto(Changelog& changelog, ChangelogCodec& codec,
                                                        state::Store* store, const std::string& topic,
                                                        int32_t partition, int64_t from, uint64_t source);

}  // namespace kpistream::ingest
