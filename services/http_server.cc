#include "services/http_server.h"

#include <CivetServer.h>
#include <fmt/format.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <cstring>

namespace kpistream::services {

namespace {

void Reply(mg_connection* conn, int status, const char* content_type, const std::string& body) {
  mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
            mg_get_response_code_text(conn, status), content_type, body.size());
  mg_write(conn, body.data(), body.size());
}

// One endpoint: a GET or a POST answered by a function.
class Endpoint final : public CivetHandler {
 public:
  using Fn = std::function<void(mg_connection*)>;
  Endpoint(Fn get, Fn post) : get_(std::move(get)), post_(std::move(post)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override { return Serve(get_, conn); }
  bool handlePost(CivetServer*, mg_connection* conn) override { return Serve(post_, conn); }

 private:
  static bool Serve(const Fn& fn, mg_connection* conn) {
    if (!fn) {
      Reply(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
      return true;
    }
    fn(conn);
    return true;
  }
  Fn get_, post_;
};

// A probe: 200 "OK", or the status and its reason.
Endpoint::Fn Probe(std::function<absl::Status()> check) {
  return [check = std::move(check)](mg_connection* conn) {
    const auto st = check ? check() : absl::OkStatus();
    if (st.ok()) {
      Reply(conn, 200, "text/plain; charset=utf-8", "OK\n");
    } else {
      Reply(conn, 503, "text/plain; charset=utf-8", std::string(st.message()) + "\n");
    }
  };
}

}  // namespace

struct HttpServer::Rep {
  HttpHandlers handlers;
  std::unique_ptr<CivetServer> server;
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::string address;
};

HttpServer::HttpServer(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               HttpHandlers handlers) {
  auto rep = std::make_unique<Rep>();
  rep->handlers = std::move(handlers);
  // civetweb takes "host:port" as listening_ports, except that it wants no
  // host part for all interfaces ("0.0.0.0:p" works too).
  const std::vector<std::string> opts = {"listening_ports", options.listen, "num_threads",
                                         std::to_string(std::max(options.threads, 1))};
  try {
    rep->server = std::make_unique<CivetServer>(opts);
  } catch (const CivetException& e) {
    return absl::UnavailableError(
        fmt::format("cannot serve HTTP (/metrics, /-/healthy, /-/ready) on {}: the address is in use or not "
                    "allowed ({})",
                    options.listen, e.what()));
  }
  auto* r = rep.get();
  auto add = [&](const char* uri, Endpoint::Fn get, Endpoint::Fn post) {
    rep->endpoints.push_back(std::make_unique<Endpoint>(std::move(get), std::move(post)));
    rep->server->addHandler(uri, rep->endpoints.back().get());
  };
  add(
      "/metrics",
      [r](mg_connection* conn) {
        MetricFamilies families;
        if (r->handlers.collect) r->handlers.collect(&families);
        Reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", prometheus::TextSerializer().Serialize(families));
      },
      nullptr);
  add("/-/healthy", Probe(r->handlers.healthy), nullptr);
  add("/-/ready", Probe(r->handlers.ready), nullptr);
  add("/-/reload", nullptr, [r](mg_connection* conn) {
    const auto st = r->handlers.reload ? r->handlers.reload() : absl::UnimplementedError("reload is not available");
    if (st.ok()) {
      Reply(conn, 200, "text/plain; charset=utf-8", "reloaded\n");
    } else {
      Reply(conn, st.code() == absl::StatusCode::kInvalidArgument ? 400 : 500, "text/plain; charset=utf-8",
            std::string(st.message()) + "\n");
    }
  });
  const auto ports = rep->server->getListeningPorts();
  const auto colon = options.listen.rfind(':');
  rep->address = fmt::format("{}:{}", colon == std::string::npos ? "0.0.0.0" : options.listen.substr(0, colon),
                             ports.empty() ? 0 : ports.front());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(rep)));
}

void HttpServer::Stop() {
  if (rep_->server) {
    rep_->server->close();
    rep_->server.reset();
  }
}

std::string HttpServer::address() const { return rep_->address; }

}  // namespace kpistream::services
