// kpid's HTTP endpoints, on one port, in Prometheus' own shape:
//   GET  /metrics     the exposition (text format 0.0.4) of what `collect`
//                     gathers (services/metrics.h);
//   GET  /-/healthy   200 while the process works (liveness);
//   GET  /-/ready     200 while kpid can serve reads, 503 with the reason
//                     otherwise (readiness);
//   POST /-/reload    reloads the configuration (as SIGHUP): 200, or 400 with
//                     what is wrong (the running configuration stays).
// Served by civetweb, the HTTP server prometheus-cpp itself uses; with basic
// auth when a web configuration is given (services/web_config.h).
//
// Thread-safety: handlers run on civetweb's threads; the callbacks must be
// safe to call from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/metrics.h"
#include "services/web_config.h"

namespace kpistream::services {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:9464";  // host:port; port 0 picks a free port
  int threads = 4;
  WebConfig web;  // users; none: open
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
  // Binds the address. UNAVAILABLE (address in use, not allowed) says which.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                                          HttpHandlers handlers);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Already serving after Create (civetweb starts with its context); Stop
  // closes the port. Idempotent.
  void Stop();
  std::string address() const;  // the bound host:port

 private:
  struct Rep;
  explicit HttpServer(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
