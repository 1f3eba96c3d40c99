#include "ingest/changelog.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "ingest/kafka_conf.h"
#include "state/keys.h"

namespace kpistream::ingest {

namespace {

using state::Keyspace;

void PutRef(std::string* out, std::string_view ref) {
  state::PutU32BE(out, static_cast<uint32_t>(ref.size()));
  out->append(ref);
}

// Reads a len(u32 BE)-prefixed name at *in, advancing it.
bool TakeRef(std::string_view* in, std::string_view* ref) {
  if (in->size() < 4) return false;
  const uint32_t n = state::GetU32BE(in->data());
  if (in->size() - 4 < n) return false;
  *ref = in->substr(4, n);
  in->remove_prefix(4 + n);
  return true;
}

// A fatal error (fenced by a newer producer of the same transactional id,
// an epoch past the transaction timeout, authorization) is ABORTED: the
// producer cannot be used again. Anything else is UNAVAILABLE: the commit
// is retried.
absl::Status FromError(rd_kafka_error_t* e, std::string_view what) {
  const std::string msg = fmt::format("{}: {}", what, rd_kafka_error_string(e));
  const bool fatal = rd_kafka_error_is_fatal(e);
  rd_kafka_error_destroy(e);
  return fatal ? absl::AbortedError(msg) : absl::UnavailableError(msg);
}

absl::Status SetConf(rd_kafka_conf_t* conf, const char* k, const std::string& v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    return absl::InvalidArgumentError(fmt::format("kafka setting {}={}: {}", k, v, err));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ChangelogTopic(std::string_view group_id, std::string_view input_topic) {
  return fmt::format("{}.{}.changelog", group_id, input_topic);
}

ChangelogCodec::ChangelogCodec(const kpi::Catalog& catalog, const kpi::StateIds& ids, state::Store* store)
    : store_(store) {
  for (size_t i = 0; i < catalog.measures.size() && i < ids.measures.size(); ++i) {
    const auto& m = catalog.measures[i];
    std::string ref = m.name;
    ref.push_back('\0');
    ref += kpi::MeasureShape(m);
    measure_ids_[ref] = ids.measures[i];
    measure_refs_[ids.measures[i]] = std::move(ref);
  }
  for (size_t i = 0; i < catalog.dimensions.size() && i < ids.dimensions.size(); ++i) {
    const auto& d = catalog.dimensions[i];
    std::string ref = fmt::format("{}.{}", kpi::FamilyName(d.family), d.name);
    dimension_ids_[ref] = ids.dimensions[i];
    dimension_refs_[ids.dimensions[i]] = std::move(ref);
  }
}

bool ChangelogCodec::Encode(Keyspace keyspace, std::string_view key, std::string* out) const {
  out->clear();
  switch (keyspace) {
    case Keyspace::kAgg: {
      state::AggKeyParts parts;
      if (!state::ParseAggKey(key, &parts)) return false;
      auto it = measure_refs_.find(parts.measure_id);
      if (it == measure_refs_.end()) return false;
      out->push_back('A');
      out->push_back(static_cast<char>(parts.tier));
      PutRef(out, it->second);
      out->append(key.substr(state::kSeriesPrefixSize, 8));  // the bucket, as stored
      out->append(parts.group_key);
      return true;
    }
    case Keyspace::kOffsets:
      out->push_back('O');
      return true;
    case Keyspace::kGroups: {
      // 'V' source dimension_id value | 'N' source dimension_id
      if (key.size() < 13 || (key[0] != 'V' && key[0] != 'N')) return false;
      auto it = dimension_refs_.find(state::GetU32BE(key.data() + 9));
      if (it == dimension_refs_.end()) return false;
      out->push_back(key[0]);
      PutRef(out, it->second);
      if (key[0] == 'V') out->append(key.substr(13));
      return true;
    }
    case Keyspace::kEventIds:
      if (key.size() < 8) return false;
      out->push_back('E');
      out->append(key.substr(8));
      return true;
    default:
      return false;
  }
}

absl::Status ChangelogCodec::Decode(std::string_view in, uint64_t source, Keyspace* keyspace, std::string* key) {
  const auto malformed = [&] { return absl::InvalidArgumentError("a malformed changelog key"); };
  if (in.empty()) return malformed();
  const char kind = in[0];
  in.remove_prefix(1);
  key->clear();
  switch (kind) {
    case 'A': {
      if (in.empty()) return malformed();
      const auto tier = static_cast<state::Tier>(in[0]);
      if (tier != state::Tier::kFine && tier != state::Tier::kHour && tier != state::Tier::kDay) return malformed();
      in.remove_prefix(1);
      std::string_view ref;
      if (!TakeRef(&in, &ref) || in.size() < 8) return malformed();
      auto it = measure_ids_.find(std::string(ref));
      if (it == measure_ids_.end()) {
        const size_t nul = ref.find('\0');
        if (nul == std::string_view::npos) return malformed();
        auto id = store_->SeriesIdFor("measure", ref.substr(0, nul), ref.substr(nul + 1));
        if (!id.ok()) return id.status();
        it = measure_ids_.emplace(std::string(ref), id->id).first;
      }
      *keyspace = Keyspace::kAgg;
      *key = state::SeriesPrefix(tier, it->second, source);
      key->append(in);  // bucket + group key
      return absl::OkStatus();
    }
    case 'O':
      if (!in.empty()) return malformed();
      *keyspace = Keyspace::kOffsets;
      *key = state::OffsetKey(source);
      return absl::OkStatus();
    case 'V':
    case 'N': {
      std::string_view ref;
      if (!TakeRef(&in, &ref) || (kind == 'N' && !in.empty())) return malformed();
      auto it = dimension_ids_.find(std::string(ref));
      if (it == dimension_ids_.end()) {
        auto id = store_->IdFor("dimension", ref);
        if (!id.ok()) return id.status();
        it = dimension_ids_.emplace(std::string(ref), *id).first;
      }
      *keyspace = Keyspace::kGroups;
      *key = kind == 'V' ? state::KeptValueKey(source, it->second, in) : state::KeptCountKey(source, it->second);
      return absl::OkStatus();
    }
    case 'E':
      *keyspace = Keyspace::kEventIds;
      *key = state::EventIdKey(source, in);
      return absl::OkStatus();
    default:
      return malformed();
  }
}

absl::StatusOr<std::unique_ptr<Changelog>> Changelog::Create(const EngineOptions& options, std::string_view id_suffix,
                                                             int transaction_timeout_ms, bool shared_id) {
  std::unique_ptr<Changelog> c(new Changelog());
  char err[512];

  auto pconf = ProducerConf(options);
  if (!pconf.ok()) return pconf.status();
  std::string instance;
  if (auto it = options.kafka_properties.find("group.instance.id"); it != options.kafka_properties.end()) {
    instance = it->second;
  } else {
    instance = fmt::format("{:016x}", std::random_device()() * 0x9E3779B97F4A7C15ull ^ std::random_device()());
  }
  const std::pair<const char*, std::string> txn_settings[] = {
      {"transactional.id", shared_id ? fmt::format("{}{}", options.group_id, id_suffix)
                                     : fmt::format("{}.{}{}", options.group_id, instance, id_suffix)},
      {"transaction.timeout.ms", std::to_string(transaction_timeout_ms)},
      {"linger.ms", "5"},
  };
  for (const auto& [k, v] : txn_settings) {
    if (options.kafka_properties.count(k)) continue;
    if (auto s = SetConf(pconf->get(), k, v); !s.ok()) return s;
  }
  // ProducerConf's message.timeout.ms=0 (forever) is for dead letters; a
  // transaction's records must fail within the transaction's timeout.
  if (!options.kafka_properties.count("message.timeout.ms")) {
    if (auto s = SetConf(pconf->get(), "message.timeout.ms", std::to_string(transaction_timeout_ms - 1000)); !s.ok()) {
      return s;
    }
  }
  rd_kafka_conf_set_opaque(pconf->get(), c.get());
  rd_kafka_conf_set_dr_msg_cb(pconf->get(), [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Changelog*>(opaque);
    if (m->err) {
      if (!self->delivery_error_) self->delivery_error_ = m->err;
      return;
    }
    auto& high = self->written_[{rd_kafka_topic_name(m->rkt), m->partition}];
    high = std::max(high, m->offset);
  });
  c->producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, pconf->release(), err, sizeof(err));
  if (!c->producer_) return absl::InvalidArgumentError(fmt::format("creating the changelog producer: {}", err));
  if (auto* e = rd_kafka_init_transactions(c->producer_, 30000)) {
    return FromError(e, "initialising changelog transactions");
  }

  // The restore reader: assign() only, never subscribes, so its group id
  // is never joined; it only has to be set.
  EngineOptions reader_options = options;
  reader_options.topics.clear();
  reader_options.group_id = options.group_id + ".restore";
  reader_options.kafka_properties.erase("group.instance.id");
  auto rconf = ConsumerConf(reader_options);
  if (!rconf.ok()) return rconf.status();
  if (auto s = SetConf(rconf->get(), "enable.partition.eof", "true"); !s.ok()) return s;
  if (auto s = SetConf(rconf->get(), "auto.offset.reset", "earliest"); !s.ok()) return s;
  if (auto s = SetConf(rconf->get(), "partition.assignment.strategy", "range"); !s.ok()) return s;
  // A restore reads one partition as fast as it can. librdkafka 2.0 stops
  // fetching a partition whose queue holds queued.min.messages and backs
  // off before fetching again, which starved the reader (1M keys: 8.5 s,
  // of which 6 s with an empty queue); a deeper queue and larger fetches
  // keep it fed (the same restore: 2.8 s).
  for (const auto& [k, v] : std::initializer_list<std::pair<const char*, const char*>>{
           {"max.partition.fetch.bytes", "16777216"},
           // At the end of a partition the broker holds a fetch for up to
           // fetch.wait.max.ms (500 ms by default) waiting for more: each
           // restore, and the next partition's first fetch behind it, paid
           // that: a hand-off of 18 partitions took ~20 s, now 1.2 s (p50,
           // tools/bench/scale-out).
           {"fetch.wait.max.ms", "10"},
           {"queued.min.messages", "2000000"},
           {"queued.max.messages.kbytes", "131072"}}) {
    if (options.kafka_properties.count(k)) continue;
    if (auto s = SetConf(rconf->get(), k, v); !s.ok()) return s;
  }
  c->reader_ = rd_kafka_new(RD_KAFKA_CONSUMER, rconf->release(), err, sizeof(err));
  if (!c->reader_) return absl::InvalidArgumentError(fmt::format("creating the changelog reader: {}", err));
  rd_kafka_poll_set_consumer(c->reader_);
  return c;
}

Changelog::~Changelog() {
  if (producer_) {
    if (in_transaction_) Abort().IgnoreError();
    rd_kafka_destroy(producer_);
  }
  if (reader_) {
    rd_kafka_consumer_close(reader_);
    rd_kafka_destroy(reader_);
  }
}

absl::Status Changelog::EnsureTopic(const std::string& topic, int partitions, bool holds_state) {
  if (ensured_.count(topic)) return absl::OkStatus();
  char err[512];
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, -1, err, sizeof(err));
  if (!nt) return absl::InvalidArgumentError(fmt::format("changelog topic {}: {}", topic, err));
  // Compacted, with segments small enough to be compacted soon: the log
  // cleaner never touches the active segment (1 GiB by default), so a
  // restore would read every commit's values since the last roll. 64 MiB
  // or 10 minutes per segment bounds the uncompacted head a restore reads.
  rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
  rd_kafka_NewTopic_set_config(nt, "segment.bytes", "67108864");
  rd_kafka_NewTopic_set_config(nt, "segment.ms", "600000");
  rd_kafka_NewTopic_set_config(nt, "min.cleanable.dirty.ratio", "0.2");
  rd_kafka_queue_t* q = rd_kafka_queue_new(producer_);
  rd_kafka_CreateTopics(producer_, &nt, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  absl::Status result;
  bool existed = false;  // made before, perhaps not by kpid: its configs are checked
  if (!ev) {
    result = absl::UnavailableError(fmt::format("creating changelog topic {}: no answer in 30 s", topic));
  } else if (rd_kafka_event_error(ev)) {
    result =
        absl::UnavailableError(fmt::format("creating changelog topic {}: {}", topic, rd_kafka_event_error_string(ev)));
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; ++i) {
      const auto e = rd_kafka_topic_result_error(res[i]);
      existed |= e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
      if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        result = absl::UnavailableError(
            fmt::format("creating changelog topic {}: {}", topic, rd_kafka_topic_result_error_string(res[i])));
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  if (!result.ok()) return result;
  // It exists: check it has a partition for each input partition.
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(producer_, topic.c_str(), nullptr);
  const struct rd_kafka_metadata* md = nullptr;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int have = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (rd_kafka_metadata(producer_, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      have = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
      rd_kafka_metadata_destroy(md);
      if (have > 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  rd_kafka_topic_destroy(rkt);
  if (have < partitions) {
    return absl::FailedPreconditionError(
        fmt::format("changelog topic {} has {} partitions, its input topic {}: add partitions to the changelog topic "
                    "(kafka-topics --alter --partitions {})",
                    topic, have, partitions, partitions));
  }
  if (existed && holds_state) {
    if (auto st = CheckCompacted(topic); !st.ok()) return st;
  }
  ensured_.insert(topic);
  return absl::OkStatus();
}

// A changelog whose records expire by time (cleanup.policy=delete, the
// broker's default for topics created by hand or by auto-creation) loses
// state silently once retention.ms passes: a restore would then miss every
// key not written since. Refused, with what to do. A broker that does not
// answer (or refuses DescribeConfigs) leaves the check to the operator,
// with a warning: it guards a mistake, not the data path.
absl::Status Changelog::CheckCompacted(const std::string& topic) {
  rd_kafka_ConfigResource_t* res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  rd_kafka_queue_t* q = rd_kafka_queue_new(producer_);
  rd_kafka_DescribeConfigs(producer_, &res, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  std::optional<std::string> policy, retention_ms, retention_bytes;
  std::string error;
  if (!ev) {
    error = "no answer in 30 s";
  } else if (rd_kafka_event_error(ev)) {
    error = rd_kafka_event_error_string(ev);
  } else {
    size_t n = 0;
    const rd_kafka_ConfigResource_t** rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
    for (size_t i = 0; i < n; ++i) {
      if (rd_kafka_ConfigResource_error(rs[i])) {
        error = rd_kafka_ConfigResource_error_string(rs[i]);
        continue;
      }
      size_t m = 0;
      const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(rs[i], &m);
      for (size_t j = 0; j < m; ++j) {
        const std::string_view name = rd_kafka_ConfigEntry_name(entries[j]);
        const char* value = rd_kafka_ConfigEntry_value(entries[j]);
        if (name == "cleanup.policy" && value) policy = value;
        if (name == "retention.ms" && value) retention_ms = value;
        if (name == "retention.bytes" && value) retention_bytes = value;
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_ConfigResource_destroy(res);
  if (!policy) {
    spdlog::warn("changelog topic {}: its cleanup.policy could not be read ({}); it must be compact", topic,
                 error.empty() ? "not listed" : error);
    return absl::OkStatus();
  }
  // With "delete" in the policy, records expire unless neither time nor
  // size bounds them (a value not listed counts as a bound).
  const bool compact = policy->find("compact") != std::string::npos;
  const bool expires = policy->find("delete") != std::string::npos &&
                       (retention_ms.value_or("") != "-1" || retention_bytes.value_or("") != "-1");
  if (compact && !expires) return absl::OkStatus();
  return absl::FailedPreconditionError(fmt::format(
      "changelog topic {} has cleanup.policy={} with retention.ms={} and retention.bytes={}: its records expire, "
      "and a restore would silently lose the state they hold. Make it compacted (kafka-configs --alter "
      "--entity-type topics --entity-name {} --add-config cleanup.policy=compact), or delete it before kpid "
      "starts so that kpid creates it",
      topic, *policy, retention_ms.value_or("?"), retention_bytes.value_or("?"), topic));
}

absl::Status Changelog::Begin() {
  if (broken_) return absl::AbortedError("an earlier changelog transaction could not be aborted");
  written_.clear();
  delivery_error_ = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (auto* e = rd_kafka_begin_transaction(producer_)) return FromError(e, "beginning a changelog transaction");
  in_transaction_ = true;
  return absl::OkStatus();
}

absl::Status Changelog::Add(const std::string& topic, int32_t partition, std::string_view key, std::string_view value) {
  for (;;) {
    const auto e = rd_kafka_producev(producer_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
                                     RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
                                     RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.data() ? value.size() : 0),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(producer_, 10);  // wait for room: the queue drains as the brokers acknowledge
      continue;
    }
    if (e) return absl::UnavailableError(fmt::format("writing to {}[{}]: {}", topic, partition, rd_kafka_err2str(e)));
    return absl::OkStatus();
  }
}

absl::StatusOr<std::map<TopicPartition, int64_t>> Changelog::Commit(
    rd_kafka_t* consumer, const rd_kafka_topic_partition_list_t* input_offsets) {
  rd_kafka_error_t* e = nullptr;
  if (consumer && input_offsets->cnt > 0) {
    rd_kafka_consumer_group_metadata_t* cgmd = rd_kafka_consumer_group_metadata(consumer);
    e = rd_kafka_send_offsets_to_transaction(producer_, input_offsets, cgmd, 30000);
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    if (e) {
      // Fenced by a rebalance (ILLEGAL_GENERATION, FENCED_INSTANCE_ID, ...):
      // abortable; the partitions are revoked and nothing of this commit
      // becomes visible.
      auto st = FromError(e, "sending input offsets to the changelog transaction");
      if (auto a = Abort(); !a.ok()) return a;
      return st;
    }
  }
  // Serves the delivery reports (the offsets written) before committing.
  rd_kafka_flush(producer_, 30000);
  if (delivery_error_) {
    if (auto a = Abort(); !a.ok()) return a;
    return absl::UnavailableError(fmt::format("writing the changelog: {}", rd_kafka_err2str(delivery_error_)));
  }
  // A retriable error (a timeout, a coordinator moving) leaves the commit
  // in progress: calling it again resumes it. An abortable one aborts.
  for (int attempt = 0;; ++attempt) {
    e = rd_kafka_commit_transaction(producer_, 30000);
    if (!e) break;
    if (rd_kafka_error_is_retriable(e) && attempt < 5) {
      spdlog::warn("committing a changelog transaction: {}; retrying", rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
      continue;
    }
    const bool abortable = rd_kafka_error_txn_requires_abort(e) || rd_kafka_error_is_retriable(e);
    auto st = FromError(e, "committing a changelog transaction");
    if (!abortable) {
      in_transaction_ = false;
      broken_ = true;
      return st;
    }
    if (auto a = Abort(); !a.ok()) return a;
    return st;
  }
  in_transaction_ = false;
  std::map<TopicPartition, int64_t> next;
  for (const auto& [tp, high] : written_) next[tp] = high + 1;
  return next;
}

absl::Status Changelog::Abort() {
  if (!in_transaction_) return absl::OkStatus();
  // Retried while retriable (it resumes); if it never completes, the
  // producer cannot begin another transaction: ABORTED, the engine stops.
  for (int attempt = 0;; ++attempt) {
    rd_kafka_error_t* e = rd_kafka_abort_transaction(producer_, 30000);
    if (!e) break;
    const bool retry = rd_kafka_error_is_retriable(e) && attempt < 5;
    spdlog::error("aborting a changelog transaction: {}", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    if (!retry) {
      in_transaction_ = false;
      broken_ = true;
      return absl::AbortedError("a changelog transaction could not be aborted");
    }
  }
  in_transaction_ = false;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int64_t, int64_t>> Changelog::Bounds(const std::string& topic, int32_t partition) {
  int64_t lo = 0, hi = 0;
  // The reader is read_committed: its end is the last stable offset. A
  // topic just created has no leader for a moment: retried for 30 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const auto e = rd_kafka_query_watermark_offsets(reader_, topic.c_str(), partition, &lo, &hi, 10000);
    if (!e) return std::make_pair(lo, hi);
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError(fmt::format("the end of {}[{}]: {}", topic, partition, rd_kafka_err2str(e)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::StatusOr<RestoreResult> Changelog::Restore(const std::string& topic, int32_t partition, int64_t from,
                                                 const RecordFn& fn, int timeout_ms) {
  auto bounds = Bounds(topic, partition);
  if (!bounds.ok()) return bounds.status();
  const auto [lo, hi] = *bounds;
  RestoreResult r;
  r.next_offset = std::max(from, lo);
  if (r.next_offset >= hi) {
    r.next_offset = std::max(r.next_offset, hi);
    return r;
  }
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)->offset = r.next_offset;
  auto ae = rd_kafka_assign(reader_, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (ae) return absl::UnavailableError(fmt::format("reading {}[{}]: {}", topic, partition, rd_kafka_err2str(ae)));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  absl::Status status;
  bool done = false;
  while (!done && status.ok()) {
    if (std::chrono::steady_clock::now() > deadline) {
      status = absl::UnavailableError(fmt::format("restoring {}[{}]: stuck at offset {} of {} for {} ms", topic,
                                                  partition, r.next_offset, hi, timeout_ms));
      break;
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(reader_, 100);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      r.next_offset = std::max(r.next_offset, m->offset);
      done = r.next_offset >= hi;
    } else if (m->err) {
      status = absl::UnavailableError(fmt::format("reading {}[{}]: {}", topic, partition, rd_kafka_message_errstr(m)));
    } else {
      r.records++;
      r.bytes += m->key_len + m->len;
      status = fn(std::string_view(static_cast<const char*>(m->key), m->key_len),
                  std::string_view(static_cast<const char*>(m->payload), m->len), m->offset);
      r.next_offset = m->offset + 1;
      done = r.next_offset >= hi;
      // The limit is on no progress, not on the whole read.
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_assign(reader_, nullptr);
  if (!status.ok()) return status;
  return r;
}

absl::StatusOr<RestoreResult> RestoreInto(Changelog& changelog, ChangelogCodec& codec, state::Store* store,
                                          const std::string& topic, int32_t partition, int64_t from, uint64_t source) {
  state::WriteBatch batch(*store);
  Keyspace keyspace;
  std::string key;
  // Each batch records the changelog offset it reached: the records are
  // full values applied in log order, so a restore cut short resumes there
  // (the local copy is only read again once a restore reached the end).
  auto restored = changelog.Restore(
      topic, partition, from, [&](std::string_view portable, std::string_view value, int64_t offset) -> absl::Status {
        if (auto st = codec.Decode(portable, source, &keyspace, &key); !st.ok()) return st;
        if (value.data() == nullptr) {
          batch.Delete(keyspace, key);  // a tombstone: the key expired (Store::CollectExpired)
        } else {
          batch.Put(keyspace, key, value);
        }
        if (batch.Count() >= 20000) {
          batch.PutChangelogOffset(source, offset + 1);
          if (auto st = store->Commit(&batch); !st.ok()) return st;
          batch.Clear();
        }
        return absl::OkStatus();
      });
  if (!restored.ok()) return restored.status();
  batch.PutChangelogOffset(source, restored->next_offset);
  if (auto st = store->Commit(&batch); !st.ok()) return st;
  return restored;
}

}  // namespace kpistream::ingest
