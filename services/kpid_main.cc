// kpid: flags, then run services::Kpid until a signal.
//   SIGTERM, SIGINT  stop: health goes NOT_SERVING, components stop in
//                    reverse order within --shutdown-timeout
//   SIGHUP           reload the configuration (as POST /-/reload)
#include <fmt/format.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "ingest/decoder.h"
#include "services/config.h"
#include "services/kpid.h"
#include "services/logging.h"
#include "services/version.h"

using namespace kpistream;

namespace {

// --log-format json: every line kpid prints is a JSON object, errors too.
bool json_logs = false;

int Fail(int code, const std::string& what) {
  if (json_logs) {
    spdlog::critical("{}", what);
    spdlog::default_logger()->flush();
  } else {
    fmt::print(stderr, "kpid: {}\n", what);
  }
  return code;
}

// `kpid --check-config FILE`: a kpid config (a map with `kafka:`) or a bare
// KPI file, told apart by structure; every error with file:line:col.
int CheckConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Fail(services::kExitConfig, fmt::format("{}: cannot open", path));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<kpi::Catalog> cat;
  if (services::LooksLikeKpidConfig(text)) {
    auto cfg = services::ParseKpidConfig(text, path);
    if (!cfg.ok()) return Fail(services::kExitConfig, std::string(cfg.status().message()));
    cat = services::LoadCatalogFor(*cfg);
  } else {
    cat = kpi::ParseCatalog(text, path);
  }
  if (!cat.ok()) return Fail(services::kExitConfig, std::string(cat.status().message()));
  fmt::print("{}: OK ({} measures, {} KPIs, {} alert rules)\n", path, cat->measures.size(), cat->kpis.size(),
             cat->alerts.size());
  return services::kExitOk;
}

void WriteListenInfo(const std::string& path, const services::Kpid& kpid) {
  const auto tmp = path + ".tmp";
  std::ofstream(tmp) << "grpc=" << kpid.grpc_address() << "\nmetrics=" << kpid.metrics_address() << "\n";
  std::filesystem::rename(tmp, path);
}

struct Flags {
  services::KpidOptions kpid;
  std::string check_config, listen_info, log_level = "info", log_format = "text";
  double shutdown_timeout_s = 20;
  bool version = false;
};

void AddFlags(CLI::App* app, Flags* f) {
  app->add_flag("--version", f->version, "print the version and exit");
  app->add_option("--config", f->kpid.config_path,
                  "kpid config file (brokers, topics, catalog); omit for the embedded demo");
  app->add_option("--check-config", f->check_config, "validate a config or KPI file, print every error, and exit");
  app->add_option("--state-dir", f->kpid.state_dir,
                  "RocksDB state directory (default: ./kpistream-state; the demo uses a fresh temporary one)");
  app->add_option("--grpc-listen", f->kpid.grpc_listen, "gRPC address (port 0: any free port)")->capture_default_str();
  app->add_option("--metrics-listen", f->kpid.metrics_listen, "HTTP address: /metrics, /-/healthy, /-/ready, /-/reload")
      ->capture_default_str();
  app->add_option("--listen-info", f->listen_info, "write the bound addresses to this file once serving");
  app->add_option("--demo-rate", f->kpid.demo_rate, "embedded demo: live events per second")->capture_default_str();
  app->add_option("--demo-alertmanager", f->kpid.demo_alertmanagers,
                  "embedded demo: an Alertmanager URL to deliver the demo's alerts to (repeatable; tools/run "
                  "--with-alertmanager starts one)");
  app->add_flag("--accept-lost-records", f->kpid.accept_lost_records,
                "when records kpid still needed were deleted from Kafka (retention), continue from the log start "
                "and count them in kpistream_records_lost_total instead of stopping; for this run only");
  app->add_option("--group-instance-id", f->kpid.group_instance_id,
                  "static consumer-group membership (librdkafka group.instance.id), e.g. the StatefulSet pod name: a "
                  "restarted kpid takes its partitions back at once");
  app->add_option("--shutdown-timeout", f->shutdown_timeout_s,
                  "seconds SIGTERM may take; past it kpid exits and what was not committed replays on restart")
      ->capture_default_str();
  app->add_option("--log-level", f->log_level, "trace | debug | info | warn | error")->capture_default_str();
  app->add_option("--log-format", f->log_format, "text | json (one JSON object per line)")->capture_default_str();
}

// Runs kpid until SIGTERM/SIGINT (or an unrecoverable error), reloading on
// SIGHUP; the exit code.
int Serve(const services::KpidOptions& options, const std::string& listen_info, double shutdown_timeout_s) {
  // Block the signals in every thread (before any starts); this one waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  int code = services::kExitOk;
  auto kpid = services::Kpid::Create(options, state::Clock::Wall(), &code);
  if (!kpid.ok()) return Fail(code, std::string(kpid.status().message()));
  if (auto st = (*kpid)->Start(); !st.ok()) return Fail(services::kExitRuntime, std::string(st.message()));
  if (json_logs) {
    spdlog::info("{}", (*kpid)->Banner());
  } else {
    fmt::print("{}", (*kpid)->Banner());
    std::fflush(stdout);
  }
  if (!listen_info.empty()) WriteListenInfo(listen_info, **kpid);

  int exit_code = services::kExitOk;
  while (true) {
    timespec ts{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("signal {}: shutting down", sig);
      break;
    }
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading the configuration");
      if (auto st = (*kpid)->Reload(); !st.ok()) spdlog::error("{}", std::string(st.message()));
    }
    if (auto fatal = (*kpid)->Poll()) {
      Fail(services::kExitRuntime, std::string(fatal->message()));
      exit_code = services::kExitRuntime;
      break;
    }
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(shutdown_timeout_s * 1000));
  if (!(*kpid)->Stop(deadline)) {
    spdlog::error("shutdown took longer than {} s: exiting now; what was not committed replays on the next start",
                  shutdown_timeout_s);
    spdlog::default_logger()->flush();
    std::_Exit(exit_code);
  }
  return exit_code;
}
}  // namespace

int main(int argc, char** argv) {
  // Resident memory, glibc. (1) glibc raises its mmap threshold (up to
  // 32 MiB) each time an mmapped block is freed, so librdkafka's fetch
  // buffers, RocksDB's memtable arena blocks and the commit batches soon
  // come from the heap arenas, where memory freed between them stays
  // resident: a fixed 256 KiB threshold keeps large blocks mmapped and
  // returned on free. (2) Up to 8 arenas per core, one per busy thread, each
  // holding its own free memory: 2 arenas (docs/RELIABILITY.md). Set before
  // any thread starts.
  ::mallopt(M_MMAP_THRESHOLD, 256 << 10);
  ::mallopt(M_ARENA_MAX, 2);
  CLI::App app{"kpid: live KPIs from Kafka events. With no --config it runs the embedded demo."};
  Flags f;
  AddFlags(&app, &f);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; a bad flag is a configuration error (1).
    return app.exit(e) == 0 ? services::kExitOk : services::kExitConfig;
  }
  if (f.version) {
    fmt::print("kpid {}\n", services::VersionString());
    return services::kExitOk;
  }
  if (auto st = services::ConfigureLogging(f.log_level, f.log_format); !st.ok()) {
    return Fail(services::kExitConfig, std::string(st.message()));
  }
  json_logs = f.log_format == "json";
  ingest::SilenceProtobufLogging();
  if (!f.check_config.empty()) return CheckConfig(f.check_config);

  return Serve(f.kpid, f.listen_info, f.shutdown_timeout_s);
}
