#include "services/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

namespace kpistream::services {

namespace {
std::string Where(const std::string& path, const YAML::Node& n) {
  const auto m = n.Mark();
  if (m.is_null()) return path;
  return fmt::format("{}:{}:{}", path, m.line + 1, m.column + 1);
}
}  // namespace

absl::StatusOr<KpidConfig> LoadKpidConfig(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return absl::NotFoundError(fmt::format("{}: cannot open the config file", path));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}:{}:{}: YAML syntax error: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  KpidConfig c;
  auto bad = [&](const YAML::Node& n, const std::string& what) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", Where(path, n), what));
  };
  try {
    if (!root.IsMap()) return bad(root, "the config must be a map (kafka, catalog, ...)");
    for (auto it = root.begin(); it != root.end(); ++it) {
      const auto k = it->first.as<std::string>();
      if (k != "kafka" && k != "catalog" && k != "commit_interval" && k != "memory_budget_mb" && k != "retention" &&
          k != "alerting" && k != "min_free_disk_mb" && k != "dedup_window") {
        return bad(it->first, fmt::format("unknown key '{}' (known: kafka, catalog, commit_interval, "
                                          "memory_budget_mb, min_free_disk_mb, retention, dedup_window, alerting)",
                                          k));
      }
    }
    const auto kafka = root["kafka"];
    if (!kafka || !kafka.IsMap()) return bad(root, "missing 'kafka' section with brokers and topics");
    if (!kafka["brokers"]) return bad(kafka, "kafka.brokers is required, e.g. broker-1:9092");
    c.engine.brokers = kafka["brokers"].as<std::string>();
    if (kafka["group_id"]) c.engine.group_id = kafka["group_id"].as<std::string>();
    if (kafka["dlq_topic"]) c.engine.dlq_topic = kafka["dlq_topic"].as<std::string>();
    ingest::PayloadFormat fmt_default = ingest::PayloadFormat::kAuto;
    if (const auto f = kafka["format"]) {
      const auto s = f.as<std::string>();
      if (s == "auto") {
        fmt_default = ingest::PayloadFormat::kAuto;
      } else if (s == "protobuf") {
        fmt_default = ingest::PayloadFormat::kProtobuf;
      } else if (s == "json") {
        fmt_default = ingest::PayloadFormat::kJson;
      } else {
        return bad(f, fmt::format("unknown format '{}' (known: auto, protobuf, json)", s));
      }
    }
    const auto topics = kafka["topics"];
    if (!topics || !topics.IsMap() || topics.size() == 0) {
      return bad(kafka, "kafka.topics must map families to topics, e.g. {campaign: kpi.campaign}");
    }
    for (auto it = topics.begin(); it != topics.end(); ++it) {
      const auto fam = kpi::ParseFamily(it->first.as<std::string>());
      if (!fam)
        return bad(it->first,
                   fmt::format("unknown family '{}' (known: campaign, product, crm)", it->first.as<std::string>()));
      c.engine.topics.push_back({it->second.as<std::string>(), *fam, fmt_default});
    }
    if (const auto props = kafka["properties"]) {
      if (!props.IsMap()) return bad(props, "kafka.properties must be a map of librdkafka settings");
      for (auto it = props.begin(); it != props.end(); ++it) {
        c.engine.kafka_properties[it->first.as<std::string>()] = it->second.as<std::string>();
      }
    }
    if (const auto cat = root["catalog"]) {
      std::filesystem::path p = cat.as<std::string>();
      if (p.is_relative()) p = std::filesystem::path(path).parent_path() / p;
      c.catalog_path = p.string();
    }
    if (const auto ci = root["commit_interval"]) {
      const auto s = ci.as<std::string>();
      int64_t ms = 0;
      if (s.size() > 2 && s.substr(s.size() - 2) == "ms") {
        ms = std::stoll(s.substr(0, s.size() - 2));
      } else {
        auto d = kpi::ParseDuration(s);
        if (!d.ok()) return bad(ci, std::string(d.status().message()));
        ms = *d * 1000;
      }
      if (ms < 10 || ms > 60000) return bad(ci, "commit_interval must be between 10ms and 60s");
      c.engine.commit_interval_ms = static_cast<int>(ms);
    }
    if (const auto mb = root["memory_budget_mb"]) {
      const auto v = mb.as<int64_t>();
      if (v < 16) return bad(mb, "memory_budget_mb must be at least 16");
      c.memory_budget_bytes = static_cast<uint64_t>(v) << 20;
      c.engine.max_dirty_bytes = c.memory_budget_bytes / 4;
      c.engine.fetch_queue_bytes = c.memory_budget_bytes / 8;
    }
    if (const auto mb = root["min_free_disk_mb"]) {
      const auto v = mb.as<int64_t>();
      if (v < 0) return bad(mb, "min_free_disk_mb must be 0 (no check) or more");
      c.min_free_disk_bytes = static_cast<uint64_t>(v) << 20;
    }
    if (const auto dw = root["dedup_window"]) {
      const auto s = dw.as<std::string>();
      if (s == "off") {
        c.engine.dedup_window_ms = 0;
      } else {
        auto d = kpi::ParseDuration(s);
        if (!d.ok()) return bad(dw, fmt::format("dedup_window: {} (or 'off')", std::string(d.status().message())));
        if (*d <= 0) return bad(dw, "dedup_window must be a positive duration, or 'off'");
        c.engine.dedup_window_ms = *d * 1000;
      }
    }
    if (const auto r = root["retention"]) {
      if (!r.IsMap()) return bad(r, "retention must be a map: {fine: 35d, hour: 400d, day: forever}");
      for (auto it = r.begin(); it != r.end(); ++it) {
        const auto tier = it->first.as<std::string>();
        const auto val = it->second.as<std::string>();
        int64_t secs = 0;
        if (val != "forever") {
          auto d = kpi::ParseDuration(val);
          if (!d.ok()) return bad(it->second, std::string(d.status().message()));
          secs = *d;
        }
        if (tier == "fine") {
          c.retention_fine_s = secs;
        } else if (tier == "hour") {
          c.retention_hour_s = secs;
        } else if (tier == "day") {
          c.retention_day_s = secs;
        } else {
          return bad(it->first, fmt::format("unknown tier '{}' (known: fine, hour, day)", tier));
        }
      }
    }
    if (const auto a = root["alerting"]) {
      if (!a.IsMap()) return bad(a, "alerting must be a map (alertmanagers, webhooks, evaluation_interval, ...)");
      for (auto it = a.begin(); it != a.end(); ++it) {
        const auto k = it->first.as<std::string>();
        const YAML::Node v = it->second;  // a copy: it->second refers into a temporary
        auto millis = [&](int64_t lo_ms) -> absl::StatusOr<int64_t> {
          auto d = kpi::ParseDuration(v.as<std::string>());
          if (!d.ok()) return bad(v, std::string(d.status().message()));
          if (*d * 1000 < lo_ms) return bad(v, fmt::format("{} must be at least {} ms", k, lo_ms));
          return *d * 1000;
        };
        auto urls = [&](std::vector<std::string>* out) -> absl::Status {
          if (!v.IsSequence()) return bad(v, fmt::format("{} must be a list of URLs", k));
          for (const auto& u : v) {
            const auto url = u.as<std::string>();
            if (!url.starts_with("http://") && !url.starts_with("https://")) {
              return bad(u, fmt::format("'{}' must be an http:// or https:// URL", url));
            }
            out->push_back(url);
          }
          return absl::OkStatus();
        };
        if (k == "alertmanagers") {
          if (auto st = urls(&c.notifier.alertmanager_urls); !st.ok()) return st;
        } else if (k == "webhooks") {
          if (auto st = urls(&c.notifier.webhook_urls); !st.ok()) return st;
        } else if (k == "evaluation_interval") {
          auto ms = millis(1000);
          if (!ms.ok()) return ms.status();
          c.alerter.eval_interval_ms = *ms;
        } else if (k == "resend_interval") {
          auto ms = millis(1000);
          if (!ms.ok()) return ms.status();
          c.notifier.resend_interval_ms = *ms;
        } else if (k == "clock") {
          const auto s = v.as<std::string>();
          if (s != "wall" && s != "event_time") return bad(v, "clock must be wall or event_time");
          c.alert_clock_event_time = s == "event_time";
        } else if (k == "generator_url") {
          c.notifier.generator_url = v.as<std::string>();
        } else {
          return bad(it->first, fmt::format("unknown key '{}' (known: alertmanagers, webhooks, evaluation_interval, "
                                            "resend_interval, clock, generator_url)",
                                            k));
        }
      }
      // As Prometheus: firing alerts live in Alertmanager for 4 intervals
      // past the last send.
      c.notifier.ends_at_ahead_ms = 4 * std::max(c.notifier.resend_interval_ms, c.alerter.eval_interval_ms);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}:{}:{}: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", path, e.what()));
  }
  return c;
}

absl::StatusOr<kpi::Catalog> LoadCatalogFor(const KpidConfig& config) {
  if (config.catalog_path.empty()) return kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml");
  return kpi::LoadCatalogFile(config.catalog_path);
}

}  // namespace kpistream::services
