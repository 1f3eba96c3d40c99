// kpid's HTTP endpoints, on one port, in Prometheus' own shape:
//   GET  /metrics     the exposition (text format 0.0.4) of what `collect`
//                     gathers (services/metrics.h);
//   GET  /-/healthy   200 while the process works (liveness);
//   GET  /-/ready     200 while kpid can serve reads, 503 with the reason
//                     otherwise (readiness);
//   POST /-/reload    reloads the configuration (as SIGHUP; PUT too, as in
//                     Prometheus): 200, or 400 with what is wrong (the
//                     running configuration stays).
// Other paths: 404; other methods: 405 with `Allow`.
//
// Served by GNU libmicrohttpd (Debian's libmicrohttpd12, TLS through
// GnuTLS), configured by Prometheus' web configuration file
// (services/web_config.h): HTTPS with an optional client-certificate check,
// and basic auth on /metrics and /-/reload. The probes stay open.
//
// Like Prometheus' exporter-toolkit, the server picks up changes to the web
// configuration file and to the certificate, key and CA files it names
// without a restart: a watcher checks them every `watch_interval`; a valid
// change takes effect for new connections (the listening socket is handed
// to a new server, in-flight requests finish on the old one); an invalid
// one is logged and the running configuration stays.
//
// Thread-safety: handlers run on the server's threads (a pool of
// `threads`, 8 MiB stacks); the callbacks must be safe from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/metrics.h"
#include "services/web_config.h"

namespace kpistream::services {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:9464";  // host:port, [v6]:port or :port (all interfaces); port 0: a free port
  int threads = 4;
  WebConfig web;                // the web configuration at start; empty: plaintext, open
  std::string web_config_file;  // where `web` came from; watched for changes when set
  std::chrono::milliseconds watch_interval{1000};
  std::chrono::seconds connection_timeout{30};  // an idle or trickling connection is closed after this
};

struct HttpHandlers {
  std::function<void(MetricFamilies*)> collect;
  // Liveness and readiness: OK, or why not.
  std::function<absl::Status()> healthy;
  std::function<absl::Status()> ready;
  // A reload; its error is the reason the running configuration stays.
  std::function<absl::Status()> reload;
};

class HttpServer {
 public:
  // Binds the address and serves. UNAVAILABLE says which address and why
  // (in use, not allowed); INVALID_ARGUMENT for an unusable certificate,
  // key or CA file, naming it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                                          HttpHandlers handlers);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Closes the port; in-flight requests finish first. Idempotent.
  void Stop();
  std::string address() const;  // the bound host:port
  // How many times a changed web configuration took effect.
  uint64_t web_config_reloads() const;

 private:
  struct Rep;
  explicit HttpServer(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
