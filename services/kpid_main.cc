// kpid: wiring only. Start order: store -> engine -> gRPC -> /metrics;
// shutdown in reverse, with a final state commit.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <malloc.h>
#include <unistd.h>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/decoder.h"
#include "ingest/engine.h"
#include "services/config.h"
#include "services/demo.h"
#include "services/grpc_server.h"
#include "services/metrics.h"
#include "state/store.h"

using namespace kpistream;

namespace {

int Fail(const std::string& what) {
  fmt::print(stderr, "kpid: {}\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Resident memory, glibc. (1) glibc raises its mmap threshold (up to
  // 32 MiB) each time an mmapped block is freed, so librdkafka's fetch
  // buffers, RocksDB's memtable arena blocks and the commit batches soon
  // come from the heap arenas, where memory freed between them stays
  // resident: a fixed 256 KiB threshold keeps large blocks mmapped and
  // returned on free. (2) Up to 8 arenas per core, one per busy thread
  // (librdkafka's, RocksDB's, gRPC's), each holding its own free memory: 2
  // arenas. Peak RSS of the 10M-distinct run with de-duplication on
  // (docs/RELIABILITY.md): 485 MiB with neither, 447 with (1), 392 with
  // both. Set before any thread starts.
  ::mallopt(M_MMAP_THRESHOLD, 256 << 10);
  ::mallopt(M_ARENA_MAX, 2);
  CLI::App app{"kpid: live KPIs from Kafka events. With no --config it runs the embedded demo."};
  std::string config_path, check_config, state_dir, grpc_listen = "127.0.0.1:50051", metrics_listen = "127.0.0.1:9464",
                                                    listen_info, log_level = "info";
  double demo_rate = 2000;
  bool accept_lost_records = false;
  std::string group_instance_id;
  app.add_option("--config", config_path, "kpid config file (brokers, topics, catalog); omit for the embedded demo");
  app.add_option("--check-config", check_config, "validate a config or KPI file, print every error, and exit");
  app.add_option("--state-dir", state_dir,
                 "RocksDB state directory (default: ./kpistream-state; the demo uses a "
                 "fresh temporary one)");
  app.add_option("--grpc-listen", grpc_listen, "gRPC address (port 0: any free port)")->capture_default_str();
  app.add_option("--metrics-listen", metrics_listen, "Prometheus /metrics address")->capture_default_str();
  app.add_option("--listen-info", listen_info, "write the bound addresses to this file once serving");
  app.add_option("--demo-rate", demo_rate, "embedded demo: live events per second")->capture_default_str();
  app.add_flag("--accept-lost-records", accept_lost_records,
               "when records kpid still needed were deleted from Kafka (retention), continue from the log start "
               "and count them in kpistream_records_lost_total instead of stopping; for this run only");
  app.add_option("--group-instance-id", group_instance_id,
                 "static consumer-group membership (librdkafka group.instance.id), e.g. the StatefulSet pod name: a "
                 "restarted kpid takes its partitions back at once");
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  ingest::SilenceProtobufLogging();

  if (!check_config.empty()) {
    // A kpid config (has 'kafka:') or a bare KPI file.
    std::ifstream in(check_config);
    if (!in) return Fail(fmt::format("{}: cannot open", check_config));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<kpi::Catalog> cat;
    if (services::LooksLikeKpidConfig(text)) {
      auto cfg = services::ParseKpidConfig(text, check_config);
      if (!cfg.ok()) return Fail(std::string(cfg.status().message()));
      cat = services::LoadCatalogFor(*cfg);
    } else {
      cat = kpi::ParseCatalog(text, check_config);
    }
    if (!cat.ok()) return Fail(std::string(cat.status().message()));
    fmt::print("{}: OK ({} measures, {} KPIs)\n", check_config, cat->measures.size(), cat->kpis.size());
    return 0;
  }

  // Block the shutdown signals in every thread; main waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  services::KpidConfig config;
  std::unique_ptr<services::EmbeddedDemo> demo;
  std::string temp_state;
  if (config_path.empty()) {
    services::DemoOptions dopts;
    dopts.rate = demo_rate;
    auto d = services::EmbeddedDemo::Start(dopts);
    if (!d.ok()) return Fail(std::string(d.status().message()));
    demo = std::move(*d);
    config.engine.brokers = demo->bootstrap();
    config.engine.group_id = "kpistream-demo";
    for (const char* f : {"campaign", "product", "crm"}) {
      config.engine.topics.push_back({fmt::format("kpi.{}", f), *kpi::ParseFamily(f), ingest::PayloadFormat::kAuto});
    }
    if (state_dir.empty()) {
      // The mock broker starts empty every time, so the demo's state must too.
      temp_state = (std::filesystem::temp_directory_path() / fmt::format("kpistream-demo-{}", ::getpid())).string();
      state_dir = temp_state;
    }
  } else {
    auto c = services::LoadKpidConfig(config_path);
    if (!c.ok()) return Fail(std::string(c.status().message()));
    config = std::move(*c);
  }
  if (state_dir.empty()) state_dir = "kpistream-state";

  auto catalog = services::LoadCatalogFor(config);
  if (!catalog.ok()) return Fail(std::string(catalog.status().message()));

  state::StoreOptions sopts;
  sopts.path = state_dir;
  // memory_budget_mb, split (invariant 6): half to RocksDB's cache with the
  // memtables charged to it, a quarter to the dirty partials, an eighth to
  // librdkafka's prefetch queue (both set by the config), and an eighth left
  // for the table readers' filters, gRPC, librdkafka's own buffers and code.
  sopts.cache_bytes = config.memory_budget_bytes / 2;
  sopts.min_free_bytes = config.min_free_disk_bytes;
  if (config.retention_fine_s) sopts.retention_fine_s = *config.retention_fine_s;
  if (config.retention_hour_s) sopts.retention_hour_s = *config.retention_hour_s;
  if (config.retention_day_s) sopts.retention_day_s = *config.retention_day_s;
  auto store = state::Store::Open(sopts);
  if (!store.ok()) return Fail(std::string(store.status().message()));

  config.engine.accept_lost_records = accept_lost_records;
  if (!group_instance_id.empty()) config.engine.kafka_properties["group.instance.id"] = group_instance_id;
  if (config.engine.dedup_window_ms > 0) {
    for (const auto& m : catalog->measures) {
      if (m.lateness_ms > config.engine.dedup_window_ms) {
        spdlog::warn(
            "measure {} accepts events {} s late, more than dedup_window ({} s): a duplicate of an event older "
            "than the window is counted again; raise dedup_window to at least the largest lateness",
            m.name, m.lateness_ms / 1000, config.engine.dedup_window_ms / 1000);
      }
    }
  }
  auto ids = kpi::BindStateIds(*catalog, store->get());
  if (!ids.ok()) return Fail(std::string(ids.status().message()));
  const state::Clock& clock = state::Clock::Wall();
  auto engine = ingest::Engine::Create(config.engine, *catalog, *ids, store->get(), clock);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));
  query::LocalPartialSource partials(**store);
  query::QueryOptions qopts;
  qopts.retention = {.fine = sopts.retention_fine_s, .hour = sopts.retention_hour_s};
  query::QueryService queries(*catalog, *ids, partials, clock, qopts);

  auto* eng = engine->get();
  const auto& probe = eng->probe();
  // Alerts: nothing changes state from a replay.
  alerting::AlertSources sources;
  sources.caught_up = [eng] { return eng->CaughtUp(); };
  sources.replaying = [eng] { return eng->Replaying(); };
  sources.newest_event_ms = [&probe](std::optional<kpi::Family> f) {
    return f ? probe.newest_event_ms_by_family[static_cast<size_t>(*f)].load() : probe.newest_event_ms.load();
  };
  sources.change_counter = [&probe] { return probe.commits.load(); };
  if (config.alert_clock_event_time) config.alerter.now_ms = [&probe] { return probe.newest_event_ms.load(); };
  auto alerter = alerting::Alerter::Create(config.alerter, *catalog, queries, store->get(), sources, clock);
  if (!alerter.ok()) return Fail(std::string(alerter.status().message()));
  std::unique_ptr<alerting::Notifier> notifier;
  if (!config.notifier.alertmanager_urls.empty() || !config.notifier.webhook_urls.empty()) {
    auto n = alerting::Notifier::Start(config.notifier, alerter->get(), clock);
    if (!n.ok()) return Fail(std::string(n.status().message()));
    notifier = std::move(*n);
  }

  auto grpc = services::GrpcServer::Start({.listen = grpc_listen, .alerter = alerter->get()}, *catalog, queries, clock);
  if (!grpc.ok()) return Fail(std::string(grpc.status().message()));
  auto metrics = services::MetricsExporter::Start(
      metrics_listen, *catalog, queries, **store, probe, [eng] { return eng->Ready(); }, clock, alerter->get(),
      notifier.get());
  if (!metrics.ok()) return Fail(std::string(metrics.status().message()));
  if (auto st = eng->Start(); !st.ok()) return Fail(std::string(st.message()));
  (*alerter)->Start();

  fmt::print("kpid {}: {} KPIs, {} alert rules, state in {}\n",
             demo ? "running the embedded demo" : "consuming " + config.engine.brokers, catalog->kpis.size(),
             catalog->alerts.size(), state_dir);
  fmt::print("  gRPC     {}   (grpcurl -plaintext {} list)\n", (*grpc)->address(), (*grpc)->address());
  fmt::print("  metrics  http://{}/metrics\n", (*metrics)->address());
  std::fflush(stdout);
  if (!listen_info.empty()) {
    const auto tmp = listen_info + ".tmp";
    std::ofstream(tmp) << "grpc=" << (*grpc)->address() << "\nmetrics=" << (*metrics)->address() << "\n";
    std::filesystem::rename(tmp, listen_info);
  }

  int exit_code = 0;
  bool serving = false;
  while (true) {
    timespec ts{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("signal {}: shutting down", sig);
      break;
    }
    if (auto fatal = eng->Fatal()) {
      fmt::print(stderr, "kpid: {}\n", std::string(fatal->message()));
      exit_code = 1;
      break;
    }
    const bool ready = eng->Ready();
    if (ready != serving) {
      (*grpc)->SetServing(ready);
      serving = ready;
      spdlog::info("health: {}", ready ? "SERVING" : "NOT_SERVING");
    }
  }
  (*grpc)->SetServing(false);
  (*alerter)->Stop();
  eng->Stop();
  (*grpc)->Shutdown();
  metrics->reset();
  if (notifier) notifier->Stop();
  if (demo) demo->Stop();
  store->reset();
  if (!temp_state.empty()) std::filesystem::remove_all(temp_state);
  return exit_code;
}
