#include "ingest/engine.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <set>
#include <thread>
#include <unordered_map>

#include "ingest/accumulator.h"
#include "ingest/admission.h"
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

struct RdConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using RdConf = std::unique_ptr<rd_kafka_conf_t, RdConfDeleter>;

absl::Status SetConf(rd_kafka_conf_t* conf, const std::string& k, const std::string& v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    return absl::InvalidArgumentError(fmt::format("kafka setting {}={}: {}", k, v, err));
  }
  return absl::OkStatus();
}

struct PartitionState {
  const TopicBinding* binding = nullptr;
  uint64_t source = 0;
  int64_t next_offset = 0;     // next offset to apply
  int64_t stored_offset = -1;  // next offset durable in the store (-1: none)
  // High watermark queried at assignment. librdkafka's cached watermark is
  // only refreshed by fetches, and after a re-assignment it can be the
  // stale one from before (a broker outage): lag must not read 0 then.
  int64_t assigned_hi = -1;
  // Stall watchdog: next_offset when last seen moving, and when.
  int64_t progress_offset = -1;
  int64_t known_hi = -1;  // newest high watermark known (PublishLags)
  std::chrono::steady_clock::time_point progress_at{};
  // Lateness watermark and admitted groups, as of next_offset.
  std::unique_ptr<PartitionAdmission> admission;
};

}  // namespace

struct Engine::Rep {
  EngineOptions options;
  kpi::Catalog* catalog;
  state::Store* store;
  Router router;
  Accumulator acc;
  Decoder decoder;
  EngineProbe probe;

  rd_kafka_t* consumer = nullptr;
  rd_kafka_t* producer = nullptr;
  std::unordered_map<std::string, const TopicBinding*> bindings;
  std::unordered_map<std::string, uint32_t> topic_ids;
  // (topic, partition) -> state. Owned by the consumer thread.
  std::map<std::pair<std::string, int32_t>, PartitionState> owned;
  uint64_t dlq_pending = 0;  // produced since the last successful flush
  // Newest event time applied since the last commit; published to the probe
  // once committed, so freshness measures what queries can see.
  int64_t pending_newest_ms = 0;
  std::array<int64_t, kpi::kNumFamilies> pending_newest_by_family{};
  int64_t total_lag = 0;  // records waiting in Kafka, as of the last commit

  std::thread thread;
  std::atomic<bool> stop{false};
  // High watermarks asked of the brokers by watermark_thread (librdkafka's
  // cached ones are refreshed only by fetches). The consumer thread sets
  // the partitions to ask about; the helper only queries and records.
  std::thread watermark_thread;
  std::mutex wm_mu;
  std::condition_variable wm_cv;
  bool wm_stop ABSL_GUARDED_BY(wm_mu) = false;
  std::vector<std::pair<std::string, int32_t>> wm_partitions ABSL_GUARDED_BY(wm_mu);
  std::map<std::pair<std::string, int32_t>, int64_t> wm_hi ABSL_GUARDED_BY(wm_mu);
  std::atomic<bool> ready{false};
  std::atomic<bool> blocked{false};
  bool brokers_suspect = false;  // a connection failed: probe the cluster
  std::atomic<bool> brokers_down{false};
  Clock::time_point last_broker_probe{};
  std::atomic<bool> started{false};
  mutable std::mutex fatal_mu;
  std::optional<absl::Status> fatal ABSL_GUARDED_BY(fatal_mu);

  std::vector<Contribution> contribs;
  std::string scratch;
  std::vector<int> late_scratch, overflow_scratch;
  // Groups admitted since the last commit: (source, measure id, key).
  std::vector<std::tuple<uint64_t, uint32_t, std::string>> new_groups;
  std::vector<std::pair<uint32_t, std::string>> new_groups_scratch;
  // Event ids applied since the last commit, by state::EventIdKey. They are
  // committed with the partials, so a replay after a crash sees exactly the
  // ids the durable state holds.
  struct AppliedId {
    uint64_t source;
    int64_t event_ms;
    int64_t offset;
  };
  std::unordered_map<std::string, AppliedId> pending_ids;
  static constexpr size_t kPendingIdBytes = 128;  // per entry: node, key, batch bytes (approximate)
  std::string id_scratch;

  Rep(const EngineOptions& o, kpi::Catalog* c, state::Store* s)
      : options(o), catalog(c), store(s), router(*c), acc(*c), decoder(o.decoder) {
    probe.late_by_measure = std::vector<std::atomic<uint64_t>>(c->measures.size());
    probe.overflow_by_measure = std::vector<std::atomic<uint64_t>>(c->measures.size());
  }

  // Loads a partition's watermark and admitted-group counts as committed.
  absl::Status LoadAdmission(PartitionState* ps, int64_t newest_ms) {
    const uint64_t source = ps->source;
    ps->admission =
        std::make_unique<PartitionAdmission>(*catalog, newest_ms, [this, source](uint32_t id, std::string_view g) {
          auto has = store->HasAdmittedGroup(source, id, g);
          // A failing lookup counts as "not admitted": the group may go to
          // __other__ but is never double counted.
          if (!has.ok()) spdlog::error("admitted-group lookup: {}", has.status().ToString());
          return has.ok() && *has;
        });
    auto counts = store->ReadGroupCounts(source);
    if (!counts.ok()) return counts.status();
    for (const auto& [id, n] : *counts) ps->admission->RestoreCount(id, n);
    return absl::OkStatus();
  }

  ~Rep() {
    if (consumer) rd_kafka_destroy(consumer);
    if (producer) rd_kafka_destroy(producer);
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
  void Reject(const rd_kafka_message_t* m, const PartitionState& ps, const DecodeError& err);
  bool Commit(bool force);
  void OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts);
  void Assign(rd_kafka_topic_partition_list_t* parts);
  void Revoke(rd_kafka_topic_partition_list_t* parts);
  void ResetToStored();
  void PublishLags();
  void ProbeWatermarks();
  void SetWatermarkPartitions();
  void CheckStalls(Clock::time_point now);
  void SetPaused(bool paused);
  void PublishNewest(int64_t newest, const std::array<int64_t, kpi::kNumFamilies>& by_family);
  void ProbeBrokers();
  void OnClientError(rd_kafka_resp_err_t err, const char* reason);
  bool SkipToLogStart(const std::string& topic, int32_t partition);
  bool SeekOne(const std::string& topic, int32_t partition, int64_t offset);
  // Whether ev repeats an event applied from this partition; fills *err.
  // Returns nullopt when the store could not answer.
  std::optional<bool> IsDuplicate(const PartitionState& ps, const kpi::EventView& ev, DecodeError* err);
  int64_t DedupHorizon(const PartitionState& ps) const {
    const int64_t newest = ps.admission->newest_event_ms();
    return newest == PartitionAdmission::kNoEvents ? std::numeric_limits<int64_t>::min()
                                                   : newest - options.dedup_window_ms;
  }
  void UpdateReady() { ready = !owned.empty() && !blocked && !brokers_down && !stop; }
};

absl::Status Engine::Rep::Init() {
  for (auto& m : catalog->measures) {
    auto id = store->IdFor("measure", m.name);
    if (!id.ok()) return id.status();
    m.id = *id;
  }
  for (const auto& b : options.topics) {
    bindings[b.topic] = &b;
    auto id = store->IdFor("topic", b.topic);
    if (!id.ok()) return id.status();
    topic_ids[b.topic] = *id;
  }
  if (options.topics.empty()) return absl::InvalidArgumentError("no input topics configured");

  char err[512];
  RdConf cconf(rd_kafka_conf_new());
  RdConf pconf(rd_kafka_conf_new());
  for (const auto& [k, v] : options.kafka_properties) {
    if (auto s = SetConf(cconf.get(), k, v); !s.ok()) return s;
    if (auto s = SetConf(pconf.get(), k, v); !s.ok()) return s;
  }
  const std::pair<const char*, std::string> consumer_settings[] = {
      {"bootstrap.servers", options.brokers},
      {"group.id", options.group_id},
      {"partition.assignment.strategy", "cooperative-sticky"},
      // Offsets live in the state store (invariant 1); Kafka's are advisory.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      // A stored offset that no longer exists must fail loudly, never skip.
      {"auto.offset.reset", "error"},
      {"enable.partition.eof", "false"},
      {"queued.max.messages.kbytes", std::to_string(std::max<size_t>(options.fetch_queue_bytes >> 10, 1024))},
      {"fetch.max.bytes", "52428800"},
  };
  for (const auto& [k, v] : consumer_settings) {
    if (options.kafka_properties.count(k) && std::string(k) != "bootstrap.servers") continue;
    if (auto s = SetConf(cconf.get(), k, v); !s.ok()) return s;
  }
  rd_kafka_conf_set_opaque(cconf.get(), this);
  // Client-level errors (brokers unreachable, ...) arrive here, on the
  // consumer thread (rd_kafka_poll_set_consumer routes the main queue to it).
  rd_kafka_conf_set_error_cb(cconf.get(), [](rd_kafka_t*, int err, const char* reason, void* opaque) {
    static_cast<Rep*>(opaque)->OnClientError(static_cast<rd_kafka_resp_err_t>(err), reason);
  });
  rd_kafka_conf_set_rebalance_cb(
      cconf.get(), [](rd_kafka_t*, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t* parts, void* opaque) {
        static_cast<Rep*>(opaque)->OnRebalance(e, parts);
      });
  consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf.release(), err, sizeof(err));
  if (!consumer) return absl::InvalidArgumentError(fmt::format("creating Kafka consumer: {}", err));
  rd_kafka_poll_set_consumer(consumer);

  for (const auto& [k, v] :
       std::initializer_list<std::pair<const char*, std::string>>{{"bootstrap.servers", options.brokers},
                                                                  {"linger.ms", "5"},
                                                                  // Retry for as long as it takes: offsets never pass
                                                                  // an undelivered dead letter (see Commit).
                                                                  {"message.timeout.ms", "0"}}) {
    if (options.kafka_properties.count(k) && std::string(k) != "bootstrap.servers") continue;
    if (auto s = SetConf(pconf.get(), k, v); !s.ok()) return s;
  }
  rd_kafka_conf_set_opaque(pconf.get(), this);
  rd_kafka_conf_set_dr_msg_cb(pconf.get(), [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* rep = static_cast<Rep*>(opaque);
    if (m->err) {
      rep->probe.dlq_failed.fetch_add(1);
      spdlog::error("dead-letter delivery failed: {}", rd_kafka_err2str(m->err));
    }
  });
  producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf.release(), err, sizeof(err));
  if (!producer) return absl::InvalidArgumentError(fmt::format("creating dead-letter producer: {}", err));

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
    Assign(parts);
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    Revoke(parts);
  } else {
    spdlog::error("rebalance error: {}", rd_kafka_err2str(err));
    Revoke(parts);
  }
  UpdateReady();
}

void Engine::Rep::Assign(rd_kafka_topic_partition_list_t* parts) {
  for (int i = 0; i < parts->cnt; ++i) {
    auto& p = parts->elems[i];
    auto bit = bindings.find(p.topic);
    if (bit == bindings.end()) continue;
    PartitionState ps;
    ps.binding = bit->second;
    ps.source = state::SourceId(topic_ids[p.topic], p.partition);
    auto stored = store->ReadOffset(ps.source);
    if (!stored.ok()) {
      SetFatal(absl::Status(stored.status().code(), fmt::format("reading stored offset of {}[{}]: {}", p.topic,
                                                                p.partition, std::string(stored.status().message()))));
      return;
    }
    int64_t lo = 0, hi = 0;
    const auto we = rd_kafka_query_watermark_offsets(consumer, p.topic, p.partition, &lo, &hi, 10000);
    if (stored->has_value()) {
      const int64_t stored_next = (*stored)->next_offset;
      int64_t next = stored_next;
      if (we == RD_KAFKA_RESP_ERR_NO_ERROR && stored_next < lo) {
        if (!options.accept_lost_records) {
          SetFatal(absl::FailedPreconditionError(fmt::format(
              "{}[{}]: the stored offset {} is below the log start {}: records {}..{} were deleted by retention "
              "while kpid was not consuming, so the KPIs cannot be exact. kpid will not skip them silently: "
              "restore the records; or restart with --accept-lost-records to continue from the log start (KPIs "
              "over windows that held those {} records stay short of them); or start with a fresh --state-dir to "
              "recompute the KPIs from what Kafka still holds",
              p.topic, p.partition, stored_next, lo, stored_next, lo - 1, lo - stored_next)));
          return;
        }
        spdlog::error(
            "{}[{}]: records {}..{} ({}) were deleted before kpid applied them; continuing from the log "
            "start as --accept-lost-records asks (counted in kpistream_records_lost_total)",
            p.topic, p.partition, stored_next, lo - 1, lo - stored_next);
        probe.lost_records.fetch_add(static_cast<uint64_t>(lo - stored_next));
        next = lo;  // stored_offset stays behind, so the next commit records the jump
      }
      ps.next_offset = next;
      ps.stored_offset = stored_next;
      if (we == RD_KAFKA_RESP_ERR_NO_ERROR) ps.assigned_hi = hi;
      p.offset = next;
    } else {
      ps.next_offset = we == RD_KAFKA_RESP_ERR_NO_ERROR ? lo : 0;
      if (we == RD_KAFKA_RESP_ERR_NO_ERROR) ps.assigned_hi = hi;
      p.offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if (stored->has_value()) {
      // What was committed before a restart counts as applied (absence and
      // freshness alerts, the event-time alert clock).
      std::array<int64_t, kpi::kNumFamilies> by_family{};
      by_family[static_cast<size_t>(ps.binding->family)] = (*stored)->newest_event_ms;
      PublishNewest((*stored)->newest_event_ms, by_family);
    }
    if (auto st = LoadAdmission(&ps, stored->has_value() ? (*stored)->newest_event_ms : PartitionAdmission::kNoEvents);
        !st.ok()) {
      SetFatal(st);
      return;
    }
    spdlog::info("assigned {}[{}] from offset {}", p.topic, p.partition,
                 stored->has_value() ? fmt::format("{} (stored)", (*stored)->next_offset) : std::string("beginning"));
    owned[{p.topic, p.partition}] = std::move(ps);
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
  probe.assigned_partitions = static_cast<int64_t>(owned.size());
  SetWatermarkPartitions();
}

void Engine::Rep::Revoke(rd_kafka_topic_partition_list_t* parts) {
  if (!Commit(true)) {
    // The partials could not be persisted: forget them, the next owner (or
    // we, on re-assignment) replays from the stored offsets.
    ResetToStored();
  }
  for (int i = 0; i < parts->cnt; ++i) {
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
  SetWatermarkPartitions();
}

void Engine::Rep::ResetToStored() {
  acc.Clear();
  new_groups.clear();
  pending_ids.clear();
  for (auto& [tp, ps] : owned) {
    auto stored = store->ReadOffset(ps.source);
    const int64_t newest =
        stored.ok() && stored->has_value() ? (*stored)->newest_event_ms : PartitionAdmission::kNoEvents;
    if (auto st = LoadAdmission(&ps, newest); !st.ok()) SetFatal(st);
  }
  rd_kafka_topic_partition_list_t* seeks = rd_kafka_topic_partition_list_new(static_cast<int>(owned.size()));
  for (auto& [tp, ps] : owned) {
    ps.next_offset = ps.stored_offset >= 0 ? ps.stored_offset : 0;
    auto* e = rd_kafka_topic_partition_list_add(seeks, tp.first.c_str(), tp.second);
    e->offset = ps.stored_offset >= 0 ? ps.stored_offset : RD_KAFKA_OFFSET_BEGINNING;
  }
  if (seeks->cnt > 0) {
    if (auto* err = rd_kafka_seek_partitions(consumer, seeks, 10000)) {
      spdlog::error("seek back to stored offsets: {}", rd_kafka_error_string(err));
      rd_kafka_error_destroy(err);
    }
  }
  rd_kafka_topic_partition_list_destroy(seeks);
}

void Engine::Rep::Reject(const rd_kafka_message_t* m, const PartitionState& ps, const DecodeError& err) {
  probe.rejected[static_cast<int>(err.reason)].fetch_add(1, std::memory_order_relaxed);
  const std::string reason(RejectReasonName(err.reason));
  const std::string topic = ps.binding->topic;
  const std::string partition = std::to_string(m->partition);
  const std::string offset = std::to_string(m->offset);
  // The DLQ carries the original bytes and key; the reason travels in headers.
  rd_kafka_headers_t* h = rd_kafka_headers_new(6);
  rd_kafka_header_add(h, "kpistream.reason", -1, reason.data(), static_cast<ssize_t>(reason.size()));
  rd_kafka_header_add(h, "kpistream.error", -1, err.detail.data(), static_cast<ssize_t>(err.detail.size()));
  rd_kafka_header_add(h, "kpistream.source.topic", -1, topic.data(), static_cast<ssize_t>(topic.size()));
  rd_kafka_header_add(h, "kpistream.source.partition", -1, partition.data(), static_cast<ssize_t>(partition.size()));
  rd_kafka_header_add(h, "kpistream.source.offset", -1, offset.data(), static_cast<ssize_t>(offset.size()));
  size_t len = m->len;
  if (len > options.dlq_max_payload_bytes) {
    len = options.dlq_max_payload_bytes;
    const std::string original = std::to_string(m->len);
    rd_kafka_header_add(h, "kpistream.truncated", -1, original.data(), static_cast<ssize_t>(original.size()));
  }
  while (true) {
    const auto e = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(options.dlq_topic.c_str()),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(m->payload, len),
                                     RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(producer, 100);
      continue;
    }
    if (e) {
      rd_kafka_headers_destroy(h);
      probe.dlq_failed.fetch_add(1);
      spdlog::error("dead-letter produce failed: {}", rd_kafka_err2str(e));
    } else {
      ++dlq_pending;
      probe.dlq_produced.fetch_add(1, std::memory_order_relaxed);
    }
    break;
  }
}

std::optional<bool> Engine::Rep::IsDuplicate(const PartitionState& ps, const kpi::EventView& ev, DecodeError* err) {
  const int64_t horizon = DedupHorizon(ps);
  int64_t offset = -1;
  id_scratch = state::EventIdKey(ps.source, ev.event_id);
  if (auto it = pending_ids.find(id_scratch); it != pending_ids.end()) {
    if (it->second.event_ms < horizon) return false;  // as if committed (below)
    offset = it->second.offset;
  } else {
    auto seen = store->LookupEventIdKey(id_scratch);
    if (!seen.ok()) {
      spdlog::error("{}[{}]: {}; holding the partition and retrying", ps.binding->topic, state::PartitionOf(ps.source),
                    seen.status().ToString());
      return std::nullopt;
    }
    // Ids behind the horizon may or may not be compacted away yet: ignore
    // them either way, so a replay decides exactly as the first pass did.
    if (!seen->has_value() || (*seen)->event_ms < horizon) return false;
    offset = (*seen)->offset;
  }
  *err = {RejectReason::kDuplicate, fmt::format("event_id \"{}\" was already applied from {}[{}] at offset {}",
                                                ev.event_id, ps.binding->topic, state::PartitionOf(ps.source), offset)};
  return true;
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
  if (m->offset < ps.next_offset) return;  // already applied
  probe.consumed.fetch_add(1, std::memory_order_relaxed);
  kpi::EventView ev;
  DecodeError err;
  if (!decoder.Decode(ps.binding->family, std::string_view(static_cast<const char*>(m->payload), m->len),
                      ps.binding->format, &ev, &err)) {
    Reject(m, ps, err);
  } else if (const auto dup = options.dedup_window_ms > 0 ? IsDuplicate(ps, ev, &err) : std::optional<bool>(false);
             !dup.has_value()) {
    // The store could not say whether this event was applied: apply
    // nothing more, rewind to the durable state and retry with backoff.
    probe.dedup_lookup_failures.fetch_add(1);
    ResetToStored();
    blocked = true;
    SetPaused(true);
    UpdateReady();
    return;
  } else if (*dup) {
    Reject(m, ps, err);
  } else {
    router.Route(ev, &scratch, &contribs);
    late_scratch.clear();
    overflow_scratch.clear();
    new_groups_scratch.clear();
    const auto r = ps.admission->Admit(ev.time_ms, &contribs, &new_groups_scratch, &late_scratch, &overflow_scratch);
    for (int mi : late_scratch) probe.late_by_measure[static_cast<size_t>(mi)].fetch_add(1, std::memory_order_relaxed);
    for (int mi : overflow_scratch) {
      probe.overflow_by_measure[static_cast<size_t>(mi)].fetch_add(1, std::memory_order_relaxed);
    }
    for (auto& [id, g] : new_groups_scratch) new_groups.emplace_back(ps.source, id, std::move(g));
    if (r.all_late()) {
      Reject(m, ps,
             {RejectReason::kLate,
              fmt::format("event time {} ms is older than the partition's newest event {} ms minus the "
                          "allowed lateness of every measure it feeds",
                          ev.time_ms, ps.admission->newest_event_ms())});
    } else {
      for (const auto& c : contribs) acc.Add(c, ps.source, ev.time_ms);
      if (options.dedup_window_ms > 0) {
        pending_ids.emplace(id_scratch, AppliedId{ps.source, ev.time_ms, m->offset});
      }
      probe.applied.fetch_add(1, std::memory_order_relaxed);
      if (ev.time_ms > pending_newest_ms) pending_newest_ms = ev.time_ms;
      auto& fam_newest = pending_newest_by_family[static_cast<size_t>(ps.binding->family)];
      if (ev.time_ms > fam_newest) fam_newest = ev.time_ms;
    }
  }
  ps.next_offset = m->offset + 1;
}

bool Engine::Rep::Commit(bool force) {
  std::vector<std::pair<const std::pair<std::string, int32_t>*, PartitionState*>> moved;
  for (auto& [tp, ps] : owned) {
    if (ps.next_offset != ps.stored_offset) moved.emplace_back(&tp, &ps);
  }
  if (moved.empty()) {
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
  if (dlq_pending > 0) {
    rd_kafka_flush(producer, force ? 10000 : 1000);
    if (rd_kafka_outq_len(producer) > 0) {
      spdlog::warn("dead-letter topic not acknowledging; holding the commit");
      probe.commit_failures.fetch_add(1);
      return false;
    }
    dlq_pending = 0;
  }
  state::WriteBatch batch(*store);
  acc.Flush(&batch);
  for (auto& [tp, ps] : moved) batch.PutOffset(ps->source, ps->next_offset, ps->admission->newest_event_ms());
  for (const auto& [k, v] : pending_ids) {
    batch.PutEventId(v.source, std::string_view(k).substr(8), v.event_ms, v.offset);
  }
  std::set<std::pair<uint64_t, uint32_t>> counted;
  for (const auto& [source, id, g] : new_groups) {
    batch.PutAdmittedGroup(source, id, g);
    counted.emplace(source, id);
  }
  for (const auto& [source, id] : counted) {
    for (auto& [tp, ps] : owned) {
      if (ps.source == source) batch.PutGroupCount(source, id, ps.admission->counts().at(id));
    }
  }
  auto st = store->Commit(&batch);
  if (!st.ok()) {
    // The batch is lost with its partials: rewind to what is durable.
    spdlog::error("commit failed: {}", st.ToString());
    probe.commit_failures.fetch_add(1);
    ResetToStored();
    return false;
  }
  new_groups.clear();
  pending_ids.clear();
  if (options.dedup_window_ms > 0) {
    for (auto& [tp, ps] : moved) store->SetEventIdHorizon(ps->source, DedupHorizon(*ps));
  }
  rd_kafka_topic_partition_list_t* offs = rd_kafka_topic_partition_list_new(static_cast<int>(moved.size()));
  for (auto& [tp, ps] : moved) {
    ps->stored_offset = ps->next_offset;
    rd_kafka_topic_partition_list_add(offs, tp->first.c_str(), tp->second)->offset = ps->next_offset;
  }
  // Advisory only (lag monitoring by other tools); failures are harmless.
  rd_kafka_commit(consumer, offs, 1);
  rd_kafka_topic_partition_list_destroy(offs);
  probe.commits.fetch_add(1, std::memory_order_relaxed);
  PublishNewest(pending_newest_ms, pending_newest_by_family);
  probe.commit_latency.Observe(std::chrono::duration<double>(Clock::now() - t0).count());
  return true;
}

void Engine::Rep::PublishNewest(int64_t newest, const std::array<int64_t, kpi::kNumFamilies>& by_family) {
  auto raise = [](std::atomic<int64_t>& a, int64_t v) {
    if (v > a.load(std::memory_order_relaxed)) a.store(v, std::memory_order_relaxed);
  };
  raise(probe.newest_event_ms, newest);
  for (size_t f = 0; f < by_family.size(); ++f) raise(probe.newest_event_ms_by_family[f], by_family[f]);
}

void Engine::Rep::SetPaused(bool paused) {
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(static_cast<int>(owned.size()));
  for (const auto& [tp, ps] : owned) rd_kafka_topic_partition_list_add(l, tp.first.c_str(), tp.second);
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
  if (rd_kafka_query_watermark_offsets(consumer, topic.c_str(), partition, &lo, &hi, 10000) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      lo <= it->second.next_offset) {
    return false;
  }
  spdlog::error(
      "{}[{}]: records {}..{} ({}) were deleted before kpid applied them; continuing from the log start "
      "as --accept-lost-records asks (counted in kpistream_records_lost_total)",
      topic, partition, it->second.next_offset, lo - 1, lo - it->second.next_offset);
  probe.lost_records.fetch_add(static_cast<uint64_t>(lo - it->second.next_offset));
  it->second.next_offset = lo;
  return SeekOne(topic, partition, lo);
}

bool Engine::Rep::SeekOne(const std::string& topic, int32_t partition, int64_t offset) {
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)->offset = offset;
  rd_kafka_error_t* e = rd_kafka_seek_partitions(consumer, l, 10000);
  rd_kafka_topic_partition_list_destroy(l);
  if (e) {
    spdlog::error("seek {}[{}] to {}: {}", topic, partition, offset, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
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

void Engine::Rep::SetWatermarkPartitions() {
  std::lock_guard<std::mutex> l(wm_mu);
  wm_partitions.clear();
  for (const auto& [tp, ps] : owned) wm_partitions.push_back(tp);
  std::erase_if(wm_hi, [this](const auto& e) { return !owned.count(e.first); });
}

// The watermark thread: every watermark_probe_interval_ms, each owned
// partition's high watermark as the partition leader has it.
void Engine::Rep::ProbeWatermarks() {
  std::unique_lock<std::mutex> l(wm_mu);
  while (!wm_stop) {
    const auto partitions = wm_partitions;
    l.unlock();
    for (const auto& tp : partitions) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(consumer, tp.first.c_str(), tp.second, &lo, &hi, 2000) ==
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::lock_guard<std::mutex> g(wm_mu);
        wm_hi[tp] = hi;
      }
    }
    l.lock();
    wm_cv.wait_for(l, std::chrono::milliseconds(options.watermark_probe_interval_ms), [this] { return wm_stop; });
  }
}

void Engine::Rep::PublishLags() {
  std::map<std::pair<std::string, int32_t>, int64_t> probed;
  {
    std::lock_guard<std::mutex> l(wm_mu);
    probed = wm_hi;
  }
  std::vector<EngineProbe::PartitionLag> lags;
  for (auto& [tp, ps] : owned) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_get_watermark_offsets(consumer, tp.first.c_str(), tp.second, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      hi = -1;
    }
    hi = std::max(hi, ps.assigned_hi);
    if (auto it = probed.find(tp); it != probed.end()) hi = std::max(hi, it->second);
    ps.known_hi = hi;
    if (hi >= 0) lags.push_back({tp.first, tp.second, std::max<int64_t>(0, hi - ps.stored_offset)});
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
    if (ps.next_offset != ps.progress_offset || ps.known_hi <= ps.next_offset || blocked || brokers_down) {
      ps.progress_offset = ps.next_offset;
      ps.progress_at = now;
      continue;
    }
    if (now - ps.progress_at < timeout) continue;
    spdlog::warn(
        "{}[{}]: {} records wait in Kafka but none arrived for {} ms; seeking to offset {} to restart "
        "fetching",
        tp.first, tp.second, ps.known_hi - ps.next_offset, options.fetch_stall_timeout_ms, ps.next_offset);
    probe.fetch_stalls.fetch_add(1);
    ps.progress_at = now;
    SeekOne(tp.first, tp.second, ps.next_offset);
  }
}

void Engine::Rep::Run() {
  watermark_thread = std::thread([this] { ProbeWatermarks(); });
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
    rd_kafka_poll(producer, 0);
    const auto now = Clock::now();
    const bool due = now - last_commit >= (blocked ? backoff : interval);
    if (due || (!blocked && acc.ApproxBytes() + pending_ids.size() * kPendingIdBytes > options.max_dirty_bytes)) {
      last_commit = now;
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
  const bool fatal_set = [&] {
    std::lock_guard<std::mutex> l(fatal_mu);
    return fatal.has_value();
  }();
  if (!fatal_set && !Commit(true)) spdlog::error("final commit failed; the next start replays from the last commit");
  {
    std::lock_guard<std::mutex> l(wm_mu);
    wm_stop = true;
  }
  wm_cv.notify_all();
  watermark_thread.join();
  rd_kafka_consumer_close(consumer);
  rd_kafka_flush(producer, 5000);
}

Engine::Engine(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Engine::~Engine() { Stop(); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, kpi::Catalog* catalog,
                                                       state::Store* store) {
  auto rep = std::make_unique<Rep>(options, catalog, store);
  if (auto s = rep->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(rep)));
}

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

std::optional<absl::Status> Engine::Fatal() const {
  std::lock_guard<std::mutex> l(rep_->fatal_mu);
  return rep_->fatal;
}

const EngineProbe& Engine::probe() const { return rep_->probe; }

}  // namespace kpistream::ingest
