#include "services/config.h"

#include "services/alert_leader.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "ingest/source_mapping.h"
#include "ingest/topic_match.h"
#include "kpi/yaml_reader.h"

namespace kpistream::services {

namespace {

// Reads kpid.yaml with the KPI file's reader (kpi/yaml_reader.h): unknown
// keys are errors at every level, every value is typed, and every error of
// the file is reported with file:line:col.
class ConfigReader {
 public:
  explicit ConfigReader(const std::string& path) : path_(path), y_(path) {}

  absl::StatusOr<KpidConfig> Read(std::string_view text) {
    auto root = y_.Load(text);
    if (!root.ok()) return root.status();
    auto st = y_.Run([&] { ReadRoot(*root); });
    if (!st.ok()) return st;
    return std::move(c_);
  }

 private:
  void ReadRoot(const YAML::Node& root) {
    if (!root.IsMap()) {
      y_.AddError(root, "the config must be a map (kafka, catalog, ...)");
      return;
    }
    y_.CheckKeys(root,
                 {"kafka", "catalog", "commit_interval", "memory_budget_mb", "min_free_disk_mb", "retention",
                  "dedup_window", "max_future", "kpi_export_interval", "alerting", "grpc", "watch", "http", "cluster"});
    const auto kafka = root["kafka"];
    if (!kafka || !kafka.IsMap()) {
      y_.AddError(kafka ? kafka : root, "a 'kafka' section with brokers and topics is required");
    } else {
      ReadKafka(kafka);
      // Replicas keep their alert state in "<group>.__alerts.changelog"
      // (services/alert_leader.h): an input topic of that name would share
      // its changelog.
      for (const auto& b : c_.engine.topics) {
        if (c_.engine.changelog && (b.topic == kAlertStateTopic || b.topic == kAlertElectionTopic)) {
          y_.AddError(kafka, fmt::format("input topic {} would share its changelog with the replicas' alert state "
                                         "(<group>.{}.changelog): rename the topic",
                                         b.topic, b.topic));
        }
      }
    }
    if (const auto cat = Path(root, "catalog")) c_.catalog_path = *cat;
    if (const auto ms = y_.DurationMs(root, "commit_interval")) {
      if (*ms < 10 || *ms > 60000) {
        y_.AddError(root["commit_interval"], "commit_interval must be between 10ms and 60s");
      } else {
        c_.engine.commit_interval_ms = static_cast<int>(*ms);
      }
    }
    if (const auto mb = y_.Int(root, "memory_budget_mb", 16, 1 << 20)) {
      c_.memory_budget_bytes = static_cast<uint64_t>(*mb) << 20;
      c_.engine.max_dirty_bytes = c_.memory_budget_bytes / 4;
      c_.engine.fetch_queue_bytes = c_.memory_budget_bytes / 8;
    }
    if (root["min_free_disk_mb"]) {
      if (const auto mb = y_.Int(root, "min_free_disk_mb", 0, 1 << 30)) {
        c_.min_free_disk_bytes = static_cast<uint64_t>(*mb) << 20;
      }
    }
    if (const auto dw = y_.Scalar(root, "dedup_window", false)) {
      if (*dw == "off") {
        c_.engine.dedup_window_ms = 0;
      } else if (auto d = kpi::ParseDuration(*dw); !d.ok()) {
        y_.AddError(root["dedup_window"],
                    fmt::format("dedup_window: {} (or 'off')", std::string(d.status().message())));
      } else {
        c_.engine.dedup_window_ms = *d * 1000;
      }
    }
    if (const auto mf = y_.Duration(root, "max_future", false)) c_.engine.max_future_ms = *mf * 1000;
    if (const auto ki = y_.DurationMs(root, "kpi_export_interval")) {
      if (*ki < 100 || *ki > 3600 * 1000) {
        y_.AddError(root["kpi_export_interval"], "kpi_export_interval must be between 100ms and 1h");
      } else {
        c_.kpi_export_interval_ms = *ki;
      }
    }
    if (const auto r = root["retention"]) ReadRetention(r);
    if (const auto a = root["alerting"]) ReadAlerting(a);
    if (const auto g = root["grpc"]) ReadGrpc(g);
    if (const auto w = root["watch"]) ReadWatch(w);
    if (const auto cl = root["cluster"]) ReadCluster(cl);
    if (const auto h = root["http"]) {
      if (!h.IsMap()) {
        y_.AddError(h, "http must be a map (web_config_file)");
      } else {
        y_.CheckKeys(h, {"web_config_file"});
        c_.web_config_file = Path(h, "web_config_file").value_or("");
      }
    }
  }

  // A file name, relative to the config file's folder unless absolute.
  std::optional<std::string> Path(const YAML::Node& parent, const char* key) {
    const auto v = y_.Scalar(parent, key, false);
    if (!v) return std::nullopt;
    std::filesystem::path p = *v;
    if (p.is_relative()) p = std::filesystem::path(path_).parent_path() / p;
    return p.string();
  }

  void ReadGrpc(const YAML::Node& g) {
    if (!g.IsMap()) {
      y_.AddError(g, "grpc must be a map (tls, tokens_file, max_batch)");
      return;
    }
    y_.CheckKeys(g, {"tls", "tokens_file", "max_batch"});
    if (const auto tls = g["tls"]) {
      if (!tls.IsMap()) {
        y_.AddError(tls, "grpc.tls must be a map: {cert_file: ..., key_file: ..., client_ca_file: ...}");
      } else {
        y_.CheckKeys(tls, {"cert_file", "key_file", "client_ca_file"});
        c_.grpc_tls.cert_file = Path(tls, "cert_file").value_or("");
        c_.grpc_tls.key_file = Path(tls, "key_file").value_or("");
        c_.grpc_tls.client_ca_file = Path(tls, "client_ca_file").value_or("");
        if (c_.grpc_tls.cert_file.empty() || c_.grpc_tls.key_file.empty()) {
          y_.AddError(tls, "grpc.tls needs both cert_file and key_file");
        }
      }
    }
    c_.tokens_file = Path(g, "tokens_file").value_or("");
    if (const auto mb = y_.Int(g, "max_batch", 1, 10000)) c_.max_batch = static_cast<size_t>(*mb);
  }

  // Cluster-wide answers (services/cluster.h); replicas only.
  void ReadCluster(const YAML::Node& cl) {
    if (!cl.IsMap()) {
      y_.AddError(cl, "cluster must be a map (peers, peers_dns, max_wait, open_timeout, tls, token_file)");
      return;
    }
    y_.CheckKeys(cl, {"peers", "peers_dns", "max_wait", "open_timeout", "read_timeout", "tls", "token_file"});
    auto& o = c_.cluster;
    if (const auto peers = cl["peers"]) {
      if (!peers.IsSequence()) {
        y_.AddError(peers, "cluster.peers must be a list of host:port (every replica's gRPC address)");
      } else {
        for (const auto& n : peers) {
          const std::string a = n.IsScalar() ? n.as<std::string>() : "";
          if (a.empty() || a.find(':') == std::string::npos) {
            y_.AddError(n, "each of cluster.peers is a host:port");
          } else {
            o.peers.push_back(a);
          }
        }
      }
    }
    if (const auto d = y_.Scalar(cl, "peers_dns", false)) {
      if (d->find("://") != std::string::npos) {
        y_.AddError(cl["peers_dns"],
                    "cluster.peers_dns is a plain name:port (no scheme), e.g. kpistream-headless:50051");
      } else if (d->find(':') == std::string::npos) {
        y_.AddError(cl["peers_dns"], "cluster.peers_dns is a name:port, e.g. kpistream-headless:50051");
      } else {
        o.peers_dns = *d;
      }
    }
    if (o.peers.empty() && o.peers_dns.empty()) {
      y_.AddError(cl, "cluster needs peers (a list of host:port) or peers_dns (name:port)");
    }
    if (const auto ms = y_.DurationMs(cl, "max_wait")) {
      if (*ms < 0 || *ms > 60000) {
        y_.AddError(cl["max_wait"], "cluster.max_wait must be between 0s and 60s");
      } else {
        o.max_wait_ms = *ms;
      }
    }
    if (const auto ms = y_.DurationMs(cl, "open_timeout")) {
      if (*ms < 10 || *ms > 60000) {
        y_.AddError(cl["open_timeout"], "cluster.open_timeout must be between 10ms and 60s");
      } else {
        o.open_timeout_ms = *ms;
      }
    }
    if (const auto ms = y_.DurationMs(cl, "read_timeout")) {
      if (*ms < 100 || *ms > 600000) {
        y_.AddError(cl["read_timeout"], "cluster.read_timeout must be between 100ms and 10m");
      } else {
        o.read_timeout_ms = *ms;
      }
    }
    if (const auto tls = cl["tls"]) {
      if (!tls.IsMap()) {
        y_.AddError(tls, "cluster.tls must be a map: {ca_file: ..., cert_file: ..., key_file: ..., server_name: ...}");
      } else {
        y_.CheckKeys(tls, {"ca_file", "cert_file", "key_file", "server_name"});
        o.tls_ca_file = Path(tls, "ca_file").value_or("");
        o.tls_cert_file = Path(tls, "cert_file").value_or("");
        o.tls_key_file = Path(tls, "key_file").value_or("");
        o.tls_server_name = y_.Scalar(tls, "server_name", false).value_or("");
        if (o.tls_ca_file.empty())
          y_.AddError(tls, "cluster.tls needs ca_file (the CA that signed the peers' certificates)");
        if (!o.peers_dns.empty() && o.tls_server_name.empty()) {
          y_.AddError(tls,
                      "cluster.tls needs server_name with peers_dns: peers are dialled by IP address, so name "
                      "the one their certificate carries (e.g. the Service's)");
        }
        if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
          y_.AddError(tls, "cluster.tls needs both cert_file and key_file, or neither");
        }
      }
    }
    o.token_file = Path(cl, "token_file").value_or("");
    if (!c_.engine.changelog) {
      y_.AddError(cl, "cluster needs kafka.changelog: true (replicas that hand their partitions over with state)");
    }
  }

  void ReadWatch(const YAML::Node& w) {
    if (!w.IsMap()) {
      y_.AddError(w, "watch must be a map (interval, max_streams, max_queries)");
      return;
    }
    y_.CheckKeys(w, {"interval", "max_streams", "max_queries"});
    if (const auto ms = y_.DurationMs(w, "interval")) {
      if (*ms < 100 || *ms > 3600 * 1000) {
        y_.AddError(w["interval"], "watch.interval must be between 100ms and 1h");
      } else {
        c_.watch.interval_ms = *ms;
      }
    }
    if (const auto n = y_.Int(w, "max_streams", 0, 1000000)) c_.watch.max_streams = static_cast<size_t>(*n);
    if (const auto n = y_.Int(w, "max_queries", 1, 10000)) c_.watch.max_queries = static_cast<size_t>(*n);
  }

  void ReadKafka(const YAML::Node& kafka) {
    y_.CheckKeys(kafka, {"brokers", "group_id", "topics", "sources", "format", "dlq_topic", "properties", "changelog",
                         "changelog_sweep_interval"});
    if (const auto c = y_.Bool(kafka, "changelog")) c_.engine.changelog = *c;
    if (const auto si = y_.DurationMs(kafka, "changelog_sweep_interval")) {
      if (*si < 1000 || *si > 7 * 86400 * 1000) {
        y_.AddError(kafka["changelog_sweep_interval"], "changelog_sweep_interval must be between 1s and 7d");
      } else {
        c_.engine.changelog_sweep_interval_ms = *si;
      }
    }
    if (const auto b = y_.Scalar(kafka, "brokers", true)) c_.engine.brokers = *b;
    if (const auto g = y_.Scalar(kafka, "group_id", false)) c_.engine.group_id = *g;
    if (const auto d = y_.Scalar(kafka, "dlq_topic", false)) {
      c_.engine.dlq_topic = *d;
      if (ingest::IsTopicPattern(*d)) {
        y_.AddError(kafka["dlq_topic"], "dlq_topic names one topic; a pattern cannot be written to");
      } else if (auto e = ingest::CheckTopic(*d)) {
        y_.AddError(kafka["dlq_topic"], *e);
      }
    }
    ingest::PayloadFormat format = ingest::PayloadFormat::kAuto;
    if (const auto f = y_.OneOf(kafka, "format", {"auto", "protobuf", "json"})) {
      format = *f == "protobuf" ? ingest::PayloadFormat::kProtobuf
               : *f == "json"   ? ingest::PayloadFormat::kJson
                                : ingest::PayloadFormat::kAuto;
    }
    const auto topics = kafka["topics"];
    const auto sources = kafka["sources"];
    if (sources) ReadSources(sources);
    if (!topics && sources) {
      // Declared sources only.
    } else if (!topics || !topics.IsMap() || topics.size() == 0) {
      y_.AddError(topics ? topics : kafka,
                  "kafka.topics must map families to topics, e.g. {campaign: kpi.campaign} (or declare "
                  "kafka.sources)");
    } else {
      for (const auto& [family, topic] : y_.StringMap(kafka, "topics")) {
        const auto fam = kpi::ParseFamily(family);
        if (!fam) {
          y_.AddError(topics, fmt::format("unknown family '{}' (known: campaign, product, crm)", family));
          continue;
        }
        if (auto e = ingest::CheckTopic(topic)) {
          y_.AddError(topics[family], *e);
          continue;
        }
        if (declared_sources_.count(topic)) {
          y_.AddError(topics, fmt::format("topic {} is also a declared source; read it one way", topic));
          continue;
        }
        c_.engine.topics.push_back({topic, *fam, format, nullptr});
      }
    }
    for (const auto& [k, v] : y_.StringMap(kafka, "properties")) c_.engine.kafka_properties[k] = v;
  }

  // kafka.sources: topics in the user's own JSON shape, mapped onto a
  // family (ingest/source_mapping.h). Every part is checked at its line.
  void ReadSources(const YAML::Node& list) {
    if (!list.IsSequence()) {
      y_.AddError(list, "kafka.sources must be a list of sources ({topic, family, format, event_time, type, ...})");
      return;
    }
    for (const auto& n : list) {
      if (!n.IsMap()) {
        y_.AddError(n, "a source must be a map (topic, family, format, event_id, event_time, type, fields)");
        continue;
      }
      y_.CheckKeys(n, {"topic", "family", "format", "schema_file", "descriptor_set_file", "message", "schema_registry",
                       "event_id", "event_time", "type", "fields"});
      ingest::SourceSpec s;
      const auto topic = y_.Scalar(n, "topic", true);
      const auto family = y_.OneOf(n, "family", {"campaign", "product", "crm"});
      if (!family) {
        if (!n["family"]) y_.AddError(n, "a source needs a family (campaign, product or crm)");
        continue;
      }
      if (!topic) continue;
      if (auto e = ingest::CheckTopic(*topic)) y_.AddError(n["topic"], *e);
      s.topic = *topic;
      declared_sources_.insert(s.topic);
      s.family = *kpi::ParseFamily(*family);
      if (const auto f = y_.Scalar(n, "format", false)) {
        s.format = *f;
        if (auto e = ingest::CheckSourceFormat(*f)) y_.AddError(n["format"], *e);
      }
      ReadSchema(n, &s);
      if (const auto id = y_.Scalar(n, "event_id", false)) s.event_id_field = *id;
      if (const auto t = n["event_time"]) {
        ReadTime(t, "event_time", &s.event_time);
      } else {
        y_.AddError(n, "a source needs event_time, e.g. {field: ts, unit: ms} or {record_timestamp: true}");
      }
      if (const auto t = n["type"]) {
        ReadType(t, &s);
      } else {
        y_.AddError(n,
                    "a source needs type: {field: kind} (the payload names the type), {field: kind, values: "
                    "{...}} or {constant: click}");
      }
      if (const auto f = n["fields"]) {
        if (!f.IsMap()) {
          y_.AddError(f, "fields must map event fields to payload fields, e.g. {campaign_id: cid}");
        } else {
          y_.CheckUnique(f);
          for (const auto& kv : f) ReadField(s.family, kv.first, kv.second, &s);
        }
      }
      if (std::any_of(c_.engine.topics.begin(), c_.engine.topics.end(),
                      [&](const ingest::TopicBinding& b) { return b.topic == s.topic; })) {
        y_.AddError(n["topic"], fmt::format("topic {} is declared twice; one source per topic (a source may carry "
                                            "several event types)",
                                            s.topic));
        continue;
      }
      if (y_.ErrorCount() > 0) continue;
      auto mapping = ingest::SourceMapping::Compile(s);
      if (!mapping.ok()) {
        // Compile's errors (most name a field the schema lacks, or one it
        // cannot convert) are reported at the schema's line when there is
        // one, else at the source's.
        y_.AddError(n["schema_file"]           ? n["schema_file"]
                    : n["descriptor_set_file"] ? n["descriptor_set_file"]
                                               : n,
                    std::string(mapping.status().message()));
        continue;
      }
      c_.engine.topics.push_back({s.topic, s.family, ingest::PayloadFormat::kJson, std::move(*mapping)});
    }
  }

  // Where an Avro source's writer schema comes from: schema_file (the
  // schema's JSON; records are bare Avro datums), or schema_registry (a URL,
  // or {url, username, password, ca_file, timeout}; records in the
  // Confluent wire format). A JSON source may name a registry too.
  void ReadSchema(const YAML::Node& n, ingest::SourceSpec* s) {
    const auto file = n["schema_file"];
    const auto reg = n["schema_registry"];
    const auto descriptors = n["descriptor_set_file"];
    if (s->format == "protobuf") {
      // The message type always comes from a descriptor set; a registry
      // adds Confluent's framing (schema id and message indexes).
      if (!descriptors || !n["message"]) {
        y_.AddError(n,
                    "format protobuf needs descriptor_set_file (protoc --include_imports --descriptor_set_out=FILE) "
                    "and message (its full name, e.g. com.example.Click)");
      }
      if (const auto path = Path(n, "descriptor_set_file")) {
        std::ifstream in(*path, std::ios::binary);
        if (!in) {
          y_.AddError(descriptors, fmt::format("cannot read the descriptor set {}: {}", *path, std::strerror(errno)));
        } else {
          s->descriptor_set_file = *path;
          s->descriptor_set.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        }
      }
      s->message = y_.Scalar(n, "message", false).value_or("");
    } else {
      for (const char* key : {"descriptor_set_file", "message"}) {
        if (n[key])
          y_.AddError(n[key], fmt::format("{} is for format protobuf (this source's format is {})", key, s->format));
      }
    }
    if (file && reg) {
      y_.AddError(reg, "give schema_file or schema_registry, not both");
      return;
    }
    if (file) {
      if (s->format != "avro") {
        y_.AddError(file, fmt::format("schema_file is for format avro (this source's format is {})", s->format));
        return;
      }
      const auto path = Path(n, "schema_file");
      if (!path) return;
      std::ifstream in(*path);
      if (!in) {
        y_.AddError(file, fmt::format("cannot read the Avro schema {}: {}", *path, std::strerror(errno)));
        return;
      }
      s->schema_file = *path;
      s->schema_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      return;
    }
    if (reg) {
      if (reg.IsScalar()) {
        s->registry.url = reg.as<std::string>();
      } else if (reg.IsMap()) {
        y_.CheckKeys(reg, {"url", "username", "password", "ca_file", "timeout"});
        s->registry.url = y_.Scalar(reg, "url", true).value_or("");
        s->registry.username = y_.Scalar(reg, "username", false).value_or("");
        s->registry.password = y_.Scalar(reg, "password", false).value_or("");
        s->registry.ca_file = Path(reg, "ca_file").value_or("");
        if (reg["timeout"]) {
          if (const auto t = y_.DurationMs(reg, "timeout")) s->registry.timeout_ms = *t;
        }
      } else {
        y_.AddError(reg, "schema_registry must be a URL or a map {url, username, password, ca_file, timeout}");
        return;
      }
      if (!s->registry.url.starts_with("http://") && !s->registry.url.starts_with("https://")) {
        y_.AddError(reg, fmt::format("schema_registry url '{}' must start with http:// or https://",
                                     ingest::RedactedUrl(s->registry.url)));
      }
      return;
    }
    if (s->format == "avro") {
      y_.AddError(n,
                  "format avro needs its writer schema: schema_file (bare Avro records) or schema_registry (the "
                  "Confluent wire format)");
    }
  }

  // A time: a field path, or {field, unit | format}, or {record_timestamp: true}.
  // `target`: a time field under `fields`, which may also be `required`.
  void ReadTime(const YAML::Node& n, const char* what, ingest::TimeSpec* t, bool target = false) {
    if (n.IsScalar()) {
      t->field = n.as<std::string>();
      return;
    }
    if (!n.IsMap()) {
      y_.AddError(n, fmt::format("{} must be a field path or a map ({{field, unit}}, {{field, format}}, "
                                 "{{record_timestamp: true}})",
                                 what));
      return;
    }
    if (target) {
      y_.CheckKeys(n, {"field", "unit", "format", "record_timestamp", "required"});
    } else {
      y_.CheckKeys(n, {"field", "unit", "format", "record_timestamp"});
    }
    if (const auto f = y_.Scalar(n, "field", false)) t->field = *f;
    if (const auto u = y_.OneOf(n, "unit", {"s", "ms", "us", "ns"})) t->unit = *u;
    if (const auto f = y_.Scalar(n, "format", false)) t->format = *f;
    if (const auto r = y_.Bool(n, "record_timestamp")) t->record_timestamp = *r;
    if (auto e = ingest::CheckTimeSpec(*t)) y_.AddError(n, fmt::format("{}: {}", what, *e));
  }

  void ReadType(const YAML::Node& n, ingest::SourceSpec* s) {
    if (n.IsScalar()) {
      s->type_field = n.as<std::string>();
      return;
    }
    if (!n.IsMap()) {
      y_.AddError(n, "type must be a field path or a map ({field, values} or {constant})");
      return;
    }
    y_.CheckKeys(n, {"field", "values", "constant"});
    if (const auto f = y_.Scalar(n, "field", false)) s->type_field = *f;
    if (const auto c = y_.Scalar(n, "constant", false)) {
      s->type_constant = *c;
      if (auto t = ingest::ResolveTypeName(s->family, *c); !t.ok())
        y_.AddError(n["constant"], std::string(t.status().message()));
    }
    if (s->type_field.empty() == s->type_constant.empty()) {
      y_.AddError(n, "type needs a field or a constant, one of them");
    }
    if (const auto v = n["values"]) {
      if (!v.IsMap()) {
        y_.AddError(v, "type values must map payload values to event types, e.g. {clk: click}");
        return;
      }
      y_.CheckUnique(v);
      for (const auto& kv : v) {
        const auto value = kv.first.as<std::string>(), name = kv.second.IsScalar() ? kv.second.as<std::string>() : "";
        if (auto t = ingest::ResolveTypeName(s->family, name); !t.ok()) {
          y_.AddError(kv.second, std::string(t.status().message()));
          continue;
        }
        s->type_values[value] = name;
      }
    }
  }

  // One target field: a payload path, or {field | constant, default, scale,
  // required} (times: {field, unit | format}).
  void ReadField(kpi::Family family, const YAML::Node& key, const YAML::Node& n, ingest::SourceSpec* s) {
    const std::string target = key.IsScalar() ? key.as<std::string>() : "";
    if (auto e = ingest::CheckTargetField(family, target)) {
      y_.AddError(key, *e);
      return;
    }
    const bool time = kpi::FamilyDescriptor(family)->FindFieldByName(target)->message_type() != nullptr;
    ingest::ValueSpec v;
    if (n.IsScalar()) {
      v.field = n.as<std::string>();
      v.time.field = v.field;
    } else if (!n.IsMap()) {
      y_.AddError(n, fmt::format("fields.{} must be a payload field path or a map ({{field, default, scale, "
                                 "required}} or {{constant}})",
                                 target));
      return;
    } else {
      if (time) {
        ReadTime(n, target.c_str(), &v.time, /*target=*/true);
        v.field = v.time.field;
      } else {
        y_.CheckKeys(n, {"field", "constant", "default", "scale", "required"});
        if (const auto f = y_.Scalar(n, "field", false)) v.field = *f;
        if (const auto c = y_.Scalar(n, "constant", false)) v.constant = *c;
        if (const auto d = y_.Scalar(n, "default", false)) v.fallback = *d;
        if (const auto x = y_.Number(n, "scale")) v.scale = *x;
        const auto* f = kpi::FamilyDescriptor(family)->FindFieldByName(target);
        if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
          const bool int32 = f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_INT32;
          for (const char* key : {"constant", "default"}) {
            const auto given = key[0] == 'c' ? v.constant : v.fallback;
            if (!given) continue;
            if (auto e = ingest::CheckNumber(*given, v.scale, int32)) {
              y_.AddError(n[key], fmt::format("fields.{}.{}: {}", target, key, *e));
            }
          }
        }
        if (!v.field.empty() == v.constant.has_value()) {
          y_.AddError(n, fmt::format("fields.{} needs a field or a constant, one of them", target));
        }
      }
      if (const auto r = y_.Bool(n, "required")) v.required = *r;
    }
    s->fields[target] = std::move(v);
  }

  void ReadRetention(const YAML::Node& r) {
    if (!r.IsMap()) {
      y_.AddError(r, "retention must be a map: {fine: 35d, hour: 400d, day: forever}");
      return;
    }
    y_.CheckKeys(r, {"fine", "hour", "day"});
    for (const char* tier : {"fine", "hour", "day"}) {
      const auto v = y_.Scalar(r, tier, false);
      if (!v) continue;
      int64_t secs = 0;
      if (*v != "forever") {
        auto d = kpi::ParseDuration(*v);
        if (!d.ok()) {
          y_.AddError(r[tier], fmt::format("retention.{}: {} (or 'forever')", tier, std::string(d.status().message())));
          continue;
        }
        secs = *d;
      }
      (std::string_view(tier) == "fine"   ? c_.retention_fine_s
       : std::string_view(tier) == "hour" ? c_.retention_hour_s
                                          : c_.retention_day_s) = secs;
    }
  }

  // An alert target: a URL, or {url, http_config} (Prometheus' http_config
  // shape: authorization, basic_auth, tls_config, headers).
  void Targets(const YAML::Node& a, const char* key, std::vector<alerting::AlertTarget>* out) {
    const auto v = a[key];
    if (!v) return;
    if (!v.IsSequence()) {
      y_.AddError(v, fmt::format("{} must be a list of URLs or {{url, http_config}} maps", key));
      return;
    }
    for (const auto& node : v) {
      alerting::AlertTarget t;
      // reset(), not =: assigning a YAML::Node writes through to the node
      // it refers to.
      YAML::Node url_node;
      url_node.reset(node);
      if (node.IsMap()) {
        y_.CheckKeys(node, {"url", "http_config"});
        url_node.reset(node["url"]);
        if (const auto h = node["http_config"]) ReadHttpConfig(h, &t.http);
      }
      if (!url_node || !url_node.IsScalar()) {
        y_.AddError(node, fmt::format("each of {} is a URL or a map with url (and http_config)", key));
        continue;
      }
      t.url = url_node.as<std::string>();
      if (!t.url.starts_with("http://") && !t.url.starts_with("https://")) {
        y_.AddError(url_node, fmt::format("'{}' must be an http:// or https:// URL", t.url));
        continue;
      }
      out->push_back(std::move(t));
    }
  }

  // One secret: inline or from a file (relative to this config's folder),
  // never both.
  void SecretPair(const YAML::Node& n, const char* key, const char* file_key, std::string* value, std::string* file) {
    *value = y_.Scalar(n, key, false).value_or("");
    *file = Path(n, file_key).value_or("");
    if (!value->empty() && !file->empty()) {
      y_.AddError(n, fmt::format("give {} or {}, not both", key, file_key));
    }
  }

  void ReadHttpConfig(const YAML::Node& h, alerting::HttpClientConfig* out) {
    if (!h.IsMap()) {
      y_.AddError(h, "http_config must be a map (authorization, basic_auth, tls_config, headers)");
      return;
    }
    y_.CheckKeys(h, {"authorization", "basic_auth", "tls_config", "headers"});
    if (const auto a = h["authorization"]) {
      if (!a.IsMap()) {
        y_.AddError(a, "authorization must be a map: {type: Bearer, credentials_file: ...}");
      } else {
        y_.CheckKeys(a, {"type", "credentials", "credentials_file"});
        out->authorization_type = y_.Scalar(a, "type", false).value_or("Bearer");
        SecretPair(a, "credentials", "credentials_file", &out->credentials, &out->credentials_file);
        if (out->credentials.empty() && out->credentials_file.empty()) {
          y_.AddError(a, "authorization needs credentials or credentials_file");
        }
      }
    }
    if (const auto b = h["basic_auth"]) {
      if (!b.IsMap()) {
        y_.AddError(b, "basic_auth must be a map: {username: ..., password_file: ...}");
      } else {
        y_.CheckKeys(b, {"username", "password", "password_file"});
        out->basic_username = y_.Scalar(b, "username", true).value_or("");
        SecretPair(b, "password", "password_file", &out->basic_password, &out->basic_password_file);
      }
    }
    if (h["authorization"] && h["basic_auth"]) y_.AddError(h, "give authorization or basic_auth, not both");
    if (const auto t = h["tls_config"]) {
      if (!t.IsMap()) {
        y_.AddError(t, "tls_config must be a map (ca_file, cert_file, key_file, insecure_skip_verify)");
      } else {
        y_.CheckKeys(t, {"ca_file", "cert_file", "key_file", "insecure_skip_verify"});
        out->ca_file = Path(t, "ca_file").value_or("");
        out->cert_file = Path(t, "cert_file").value_or("");
        out->key_file = Path(t, "key_file").value_or("");
        if (out->cert_file.empty() != out->key_file.empty()) {
          y_.AddError(t, "a client certificate needs both cert_file and key_file");
        }
        out->insecure_skip_verify = y_.Bool(t, "insecure_skip_verify").value_or(false);
      }
    }
    for (const auto& [k, v] : y_.StringMap(h, "headers")) {
      std::string lower(k);
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (lower == "authorization" || lower == "content-type" || lower == "content-length" || lower == "host") {
        y_.AddError(h["headers"], fmt::format("header {} is set by kpid (use authorization or basic_auth)", k));
        continue;
      }
      if (k.empty() || k.find_first_of(": \r\n") != std::string::npos || v.find_first_of("\r\n") != std::string::npos) {
        y_.AddError(h["headers"], fmt::format("header '{}' is not a valid HTTP header", k));
        continue;
      }
      out->headers.emplace_back(k, v);
    }
  }

  void ReadAlerting(const YAML::Node& a) {
    if (!a.IsMap()) {
      y_.AddError(a, "alerting must be a map (alertmanagers, webhooks, evaluation_interval, ...)");
      return;
    }
    y_.CheckKeys(a, {"alertmanagers", "webhooks", "evaluation_interval", "resend_interval", "clock", "generator_url",
                     "max_evaluation_gap"});
    Targets(a, "alertmanagers", &c_.notifier.alertmanagers);
    Targets(a, "webhooks", &c_.notifier.webhooks);
    auto millis = [&](const char* key, int64_t* out) {
      if (const auto d = y_.Duration(a, key, false)) {
        if (*d < 1) {
          y_.AddError(a[key], fmt::format("{} must be at least 1s", key));
        } else {
          *out = *d * 1000;
        }
      }
    };
    millis("evaluation_interval", &c_.alerter.eval_interval_ms);
    millis("resend_interval", &c_.notifier.resend_interval_ms);
    millis("max_evaluation_gap", &c_.alerter.max_evaluation_gap_ms);
    if (const auto clock = y_.Scalar(a, "clock", false)) {
      if (*clock != "wall" && *clock != "event_time") {
        y_.AddError(a["clock"], "clock must be wall or event_time");
      } else {
        c_.alert_clock_event_time = *clock == "event_time";
      }
    }
    if (const auto g = y_.Scalar(a, "generator_url", false)) c_.notifier.generator_url = *g;
    // As Prometheus: firing alerts live in Alertmanager for 4 intervals
    // past the last send.
    c_.notifier.ends_at_ahead_ms = 4 * std::max(c_.notifier.resend_interval_ms, c_.alerter.eval_interval_ms);
  }

  std::string path_;
  kpi::YamlReader y_;
  KpidConfig c_;
  std::set<std::string> declared_sources_;  // kafka.sources topics, valid or not
};

}  // namespace

absl::StatusOr<KpidConfig> ParseKpidConfig(std::string_view text, const std::string& path) {
  auto c = ConfigReader(path).Read(text);
  if (!c.ok() || c->web_config_file.empty()) return c;
  auto web = LoadWebConfig(c->web_config_file);  // its own errors, with its own file:line:col
  if (!web.ok()) return web.status();
  c->web = std::move(*web);
  return c;
}

absl::StatusOr<KpidConfig> LoadKpidConfig(const std::string& path) {
  auto text = kpi::YamlReader::ReadFile(path, "config file");
  if (!text.ok()) return text.status();
  return ParseKpidConfig(*text, path);
}

bool LooksLikeKpidConfig(std::string_view text) {
  kpi::YamlReader y("");
  auto root = y.Load(text);
  return root.ok() && root->IsMap() && (*root)["kafka"] && !(*root)["measures"];
}

absl::StatusOr<kpi::Catalog> LoadCatalogFor(const KpidConfig& config) {
  if (config.catalog_path.empty()) return kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml");
  return kpi::LoadCatalogFile(config.catalog_path);
}

}  // namespace kpistream::services
