// kpid as one object: it builds its components in order, starts them,
// reloads the configuration, and stops them in reverse, within a deadline.
//
//   store -> pipeline (catalog, state ids, engine, query service, alerter,
//   notifier) -> gRPC -> HTTP (/metrics, /-/healthy, /-/ready, /-/reload)
//
// The pipeline is what a reload replaces: the KPI file and the alerting
// section are validated first (an invalid file keeps the running pipeline
// and Reload says why), then the new pipeline is built, the old one stops
// (its engine's final commit), the new one starts from the committed state,
// and the servers switch to it; requests in flight finish on the one they
// started on. What a reload can change, and what needs a restart, is in
// docs/OPERATIONS.md.
//
// Lifecycle, as every long-lived component: Create (fallible, builds and
// binds) -> Start -> Stop (reverse order, idempotent).
//
// Thread-safety: Create/Start/Stop/Reload from one controlling thread (or
// Reload from the HTTP server's threads: reloads are serialized); the
// accessors from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "state/clock.h"

namespace kpistream::services {

struct KpidOptions {
  std::string config_path;  // kpid.yaml; empty: the embedded demo
  std::string state_dir;    // empty: ./kpistream-state (the demo: a fresh temporary one)
  std::string grpc_listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";
  double demo_rate = 2000;
  bool accept_lost_records = false;
  std::string group_instance_id;
  // The embedded demo only: Alertmanagers to deliver its alerts to.
  std::vector<std::string> demo_alertmanagers;
};

// Exit codes of kpid (docs/OPERATIONS.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitConfig = 1,   // bad arguments or configuration
  kExitListen = 2,   // a listen address is in use or not allowed
  kExitState = 3,    // the state directory cannot be opened
  kExitRuntime = 4,  // stopped on an unrecoverable error while running
};

class Kpid {
 public:
  // Builds everything and binds the listen addresses. On error, the exit
  // code that fits it is in *exit_code.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Kpid>> Create(const KpidOptions& options,
                                                                    const state::Clock& clock, int* exit_code);
  ~Kpid();
  Kpid(const Kpid&) = delete;
  Kpid& operator=(const Kpid&) = delete;

  [[nodiscard]] absl::Status Start();
  // Stops in reverse order: health NOT_SERVING, alerts, the engine's final
  // commit, delivery, gRPC, HTTP, the demo, the store. Returns false if the
  // deadline passed first (what was not committed replays on the next
  // start). REQUIRES after false: the caller exits the process (std::_Exit)
  // without destroying this object; the stop still runs on its own thread.
  bool Stop(std::chrono::steady_clock::time_point deadline);
  // Re-reads kpid.yaml and the KPI file and replaces the pipeline.
  // INVALID_ARGUMENT (with every error) leaves the running one in place.
  [[nodiscard]] absl::Status Reload();

  // Propagates readiness to the health service; returns an error when the
  // engine stopped on an unrecoverable one. Call periodically.
  std::optional<absl::Status> Poll();
  // Liveness and readiness, for /-/healthy and /-/ready.
  absl::Status Healthy() const;
  absl::Status Ready() const;

  std::string grpc_address() const;
  std::string metrics_address() const;
  // What kpid prints once started: mode, catalog size, addresses.
  std::string Banner() const;

 private:
  struct Rep;
  explicit Kpid(std::unique_ptr<Rep> rep);
  // Binds gRPC and HTTP (their handlers read this object).
  absl::Status Bind();
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
