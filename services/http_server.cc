#include "services/http_server.h"

#include <CivetServer.h>
#include <fmt/format.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <thread>

namespace kpistream::services {

namespace {

void Reply(mg_connection* conn, int status, const char* content_type, const std::string& body,
           const char* extra_headers = "") {
  mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n", status,
            mg_get_response_code_text(conn, status), content_type, body.size(), extra_headers);
  mg_write(conn, body.data(), body.size());
}

// One endpoint: a GET or a POST answered by a function; `auth` (may be
// null) must accept the request first.
class Endpoint final : public CivetHandler {
 public:
  using Fn = std::function<void(mg_connection*)>;
  Endpoint(Fn get, Fn post, const BasicAuth* auth) : get_(std::move(get)), post_(std::move(post)), auth_(auth) {}
  bool handleGet(CivetServer*, mg_connection* conn) override { return Serve(get_, conn); }
  bool handlePost(CivetServer*, mg_connection* conn) override { return Serve(post_, conn); }

 private:
  bool Serve(const Fn& fn, mg_connection* conn) const {
    if (auth_ && !auth_->Check(mg_get_header(conn, "Authorization"))) {
      Reply(conn, 401, "text/plain; charset=utf-8", "unauthorized\n",
            "WWW-Authenticate: Basic realm=\"kpid\", charset=\"UTF-8\"\r\n");
      return true;
    }
    if (!fn) {
      Reply(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
      return true;
    }
    fn(conn);
    return true;
  }
  Fn get_, post_;
  const BasicAuth* auth_;
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
  std::unique_ptr<BasicAuth> auth;
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
  if (!options.web.basic_auth_users.empty()) rep->auth = std::make_unique<BasicAuth>(options.web.basic_auth_users);
  auto* r = rep.get();
  // Probes stay open: they tell only OK or why not.
  auto add = [&](const char* uri, Endpoint::Fn get, Endpoint::Fn post, bool open = false) {
    rep->endpoints.push_back(
        std::make_unique<Endpoint>(std::move(get), std::move(post), open ? nullptr : rep->auth.get()));
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
  add("/-/healthy", Probe(r->handlers.healthy), nullptr, /*open=*/true);
  add("/-/ready", Probe(r->handlers.ready), nullptr, /*open=*/true);
  add("/-/reload", nullptr, [r](mg_connection* conn) {
    // A reload parses the KPI file by recursive descent; civetweb's workers
    // have a small stack fixed when it was built (ASan overflowed it), so
    // the reload runs on a thread with the default stack.
    absl::Status st = absl::UnimplementedError("reload is not available");
    if (r->handlers.reload) std::thread([&] { st = r->handlers.reload(); }).join();
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
