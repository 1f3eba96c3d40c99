#include "services/http_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "kpi/yaml_reader.h"

namespace kpistream::services {

namespace {

constexpr char kText[] = "text/plain; charset=utf-8";

// What MHD_start_daemon logged last on this thread: the reason it failed.
thread_local std::string last_mhd_error;

void MhdLog(void*, const char* fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  std::string msg(buf);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
  last_mhd_error = msg;
  // Failed handshakes and dropped connections: a client's fault, not ours.
  spdlog::debug("http: {}", msg);
}

// The files a web configuration depends on, as stat sees them: a change of
// any (Kubernetes swaps a Secret's files by renaming a symlink) is a reload.
using FileStamp = std::tuple<int64_t, int64_t, int64_t>;  // mtime ns, size, inode
std::vector<FileStamp> Stamps(const std::vector<std::string>& files) {
  std::vector<FileStamp> out;
  for (const auto& f : files) {
    struct stat st {};
    if (f.empty() || ::stat(f.c_str(), &st) != 0) {
      out.emplace_back(-1, -1, -1);
      continue;
    }
    out.emplace_back(int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, st.st_size, st.st_ino);
  }
  return out;
}

std::vector<std::string> Watched(const std::string& web_file, const WebConfig& w) {
  return {web_file, w.cert_file, w.key_file, w.client_ca_file};
}

// Checks the certificate, key and CA with GnuTLS before a server is built
// on them, so that an error names the file instead of failing a handshake.
absl::Status CheckTlsMaterial(const WebConfig& w, const std::string& cert, const std::string& key,
                              const std::string& ca) {
  gnutls_certificate_credentials_t cred = nullptr;
  if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS) {
    return absl::ResourceExhaustedError("cannot allocate TLS credentials");
  }
  absl::Status st;
  const gnutls_datum_t c{reinterpret_cast<unsigned char*>(const_cast<char*>(cert.data())),
                         static_cast<unsigned>(cert.size())};
  const gnutls_datum_t k{reinterpret_cast<unsigned char*>(const_cast<char*>(key.data())),
                         static_cast<unsigned>(key.size())};
  if (int rc = gnutls_certificate_set_x509_key_mem(cred, &c, &k, GNUTLS_X509_FMT_PEM); rc < 0) {
    st = absl::InvalidArgumentError(fmt::format("tls_server_config: cert_file {} with key_file {}: {}", w.cert_file,
                                                w.key_file, gnutls_strerror(rc)));
  } else if (!ca.empty()) {
    const gnutls_datum_t a{reinterpret_cast<unsigned char*>(const_cast<char*>(ca.data())),
                           static_cast<unsigned>(ca.size())};
    const int n = gnutls_certificate_set_x509_trust_mem(cred, &a, GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      st = absl::InvalidArgumentError(fmt::format("tls_server_config: client_ca_file {}: {}", w.client_ca_file,
                                                  n < 0 ? gnutls_strerror(n) : "no certificate in the file"));
    }
  }
  gnutls_certificate_free_credentials(cred);
  return st;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what) {
  return kpi::YamlReader::ReadFile(path, what);
}

}  // namespace

namespace {

// One web configuration and the libmicrohttpd server that applies it. A
// changed configuration gets a new Generation on the same listening socket.
struct Generation {
  const HttpHandlers* handlers = nullptr;
  WebConfig web;
  std::unique_ptr<BasicAuth> auth;  // null: open
  std::string cert, key, ca;        // PEM; kept for the server's lifetime
  std::vector<FileStamp> stamps;
  MHD_Daemon* daemon = nullptr;
};

}  // namespace

struct HttpServer::Rep {
  HttpServerOptions options;
  HttpHandlers handlers;
  int fd = -1;
  std::string address;
  std::atomic<uint64_t> reloads{0};

  std::mutex mu;  // guards current, stop; the watcher is the only other writer
  std::unique_ptr<Generation> current;
  bool stop = false;
  std::condition_variable cv;
  std::thread watcher;

  absl::StatusOr<std::unique_ptr<Generation>> Build(const WebConfig& web);
  absl::Status Start(Generation* g);
  void Watch();
};

namespace {

MHD_Result Reply(MHD_Connection* conn, unsigned status, const char* content_type, const std::string& body,
                 const std::vector<std::pair<const char*, std::string>>& headers = {}) {
  MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  for (const auto& [name, value] : headers) MHD_add_response_header(r, name, value.c_str());
  const MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

MHD_Result Probe(MHD_Connection* conn, const std::function<absl::Status()>& check) {
  const auto st = check ? check() : absl::OkStatus();
  if (st.ok()) return Reply(conn, MHD_HTTP_OK, kText, "OK\n");
  return Reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, kText, std::string(st.message()) + "\n");
}

// The client certificate, under VerifyClientCertIfGiven or
// RequireAndVerifyClientCert: OK, or why it is refused. GnuTLS asked for
// it in the handshake (libmicrohttpd requests one when given a CA) and
// checks it here against the client CA and its dates, and, as Prometheus
// does, that it may serve as a TLS client (extended key usage clientAuth,
// or no key usage restriction at all).
absl::Status CheckClientCert(MHD_Connection* conn, const WebConfig& web) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  auto* session = info ? static_cast<gnutls_session_t>(info->tls_session) : nullptr;
  if (session == nullptr) return absl::PermissionDeniedError("no TLS session");
  unsigned n = 0;
  if (gnutls_certificate_get_peers(session, &n) == nullptr || n == 0) {
    return web.require_client_cert ? absl::PermissionDeniedError("a client certificate is required") : absl::OkStatus();
  }
  unsigned status = 0;
  gnutls_typed_vdata_st purpose{};
  purpose.type = GNUTLS_DT_KEY_PURPOSE_OID;
  purpose.data = reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT));
  if (int rc = gnutls_certificate_verify_peers(session, &purpose, 1, &status); rc < 0) {
    return absl::PermissionDeniedError(fmt::format("client certificate: {}", gnutls_strerror(rc)));
  }
  if (status != 0) {
    gnutls_datum_t why{};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
    std::string reason(reinterpret_cast<char*>(why.data), why.size);
    gnutls_free(why.data);
    return absl::PermissionDeniedError("client certificate refused: " + reason);
  }
  return absl::OkStatus();
}

MHD_Result Handle(void* cls, MHD_Connection* conn, const char* url, const char* method, const char*, const char*,
                  size_t* upload_size, void** req) {
  // libmicrohttpd calls once with the headers, then with each piece of the
  // body, then once more: the answer goes on the last call. Request bodies
  // mean nothing here and are dropped.
  if (*req == nullptr) {
    *req = cls;
    return MHD_YES;
  }
  if (*upload_size != 0) {
    *upload_size = 0;
    return MHD_YES;
  }
  const auto& g = *static_cast<Generation*>(cls);
  const auto& h = *g.handlers;
  const std::string_view path = url, m = method;
  const bool get = m == MHD_HTTP_METHOD_GET || m == MHD_HTTP_METHOD_HEAD;
  const bool post = m == MHD_HTTP_METHOD_POST || m == MHD_HTTP_METHOD_PUT;
  if (!g.cert.empty() && g.web.verify_client_cert) {
    if (auto st = CheckClientCert(conn, g.web); !st.ok()) {
      return Reply(conn, MHD_HTTP_FORBIDDEN, kText, std::string(st.message()) + "\n");
    }
  }
  if (path == "/-/healthy" || path == "/-/ready") {
    if (!get) return Reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, kText, "method not allowed\n", {{"Allow", "GET"}});
    return Probe(conn, path == "/-/healthy" ? h.healthy : h.ready);
  }
  if (path != "/metrics" && path != "/-/reload") return Reply(conn, MHD_HTTP_NOT_FOUND, kText, "not found\n");
  if (g.auth && !g.auth->Check(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
    return Reply(conn, MHD_HTTP_UNAUTHORIZED, kText, "unauthorized\n",
                 {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"kpid\", charset=\"UTF-8\""}});
  }
  if (path == "/metrics") {
    if (!get) return Reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, kText, "method not allowed\n", {{"Allow", "GET"}});
    MetricFamilies families;
    if (h.collect) h.collect(&families);
    return Reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                 prometheus::TextSerializer().Serialize(families));
  }
  if (!post) return Reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, kText, "method not allowed\n", {{"Allow", "POST, PUT"}});
  const absl::Status st = h.reload ? h.reload() : absl::UnimplementedError("reload is not available");
  if (st.ok()) return Reply(conn, MHD_HTTP_OK, kText, "reloaded\n");
  return Reply(conn,
               st.code() == absl::StatusCode::kInvalidArgument ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR,
               kText, std::string(st.message()) + "\n");
}

// Binds and listens on host:port ourselves (libmicrohttpd is then handed
// the socket): the error can say why, and a changed configuration can move
// the socket to a new server without closing the port.
absl::StatusOr<int> Listen(const std::string& listen, std::string* address) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format("HTTP listen address {}: want host:port", listen));
  }
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(fmt::format("HTTP listen address {}: {}", listen, gai_strerror(rc)));
  }
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    // SO_REUSEADDR lets a restarted kpid bind while old connections sit in
    // TIME_WAIT; Linux still refuses a second listener (no SO_REUSEPORT).
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(fmt::format(
        "cannot serve HTTP (/metrics, /-/healthy, /-/ready) on {}: {} (the address is in use or not allowed)", listen,
        why));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int p = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (host.empty()) host = "0.0.0.0";
  *address = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, p) : fmt::format("{}:{}", host, p);
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Generation>> HttpServer::Rep::Build(const WebConfig& web) {
  auto g = std::make_unique<Generation>();
  g->handlers = &handlers;
  g->web = web;
  if (!web.basic_auth_users.empty()) g->auth = std::make_unique<BasicAuth>(web.basic_auth_users);
  g->stamps = Stamps(Watched(options.web_config_file, web));
  if (!web.cert_file.empty()) {
    auto cert = ReadPem(web.cert_file, "TLS certificate (tls_server_config.cert_file)");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(web.key_file, "TLS key (tls_server_config.key_file)");
    if (!key.ok()) return key.status();
    g->cert = std::move(*cert);
    g->key = std::move(*key);
    if (web.verify_client_cert) {
      auto ca = ReadPem(web.client_ca_file, "client CA (tls_server_config.client_ca_file)");
      if (!ca.ok()) return ca.status();
      g->ca = std::move(*ca);
    }
    if (auto st = CheckTlsMaterial(web, g->cert, g->key, g->ca); !st.ok()) return st;
  }
  return g;
}

absl::Status HttpServer::Rep::Start(Generation* g) {
  // Each server gets a duplicate of the listening socket: libmicrohttpd
  // closes the socket it was given when it fails to start, and two servers
  // overlap while a changed configuration takes over.
  const int own_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own_fd < 0) {
    return absl::ResourceExhaustedError(
        fmt::format("cannot start the HTTP server on {}: dup: {}", address, std::strerror(errno)));
  }
  const bool tls = !g->cert.empty();
  // poll(2), not MHD_USE_AUTO's epoll: with epoll, MHD_quiesce_daemon (a
  // reload, Stop) deletes the listen socket from the epoll set while the
  // polling thread may have taken it out already, and libmicrohttpd 0.9.75
  // then aborts the process ("Failed to remove listen FD from epoll set";
  // seen in CI on 2026-11-30, HttpServerTest under ASan). A metrics and
  // health endpoint has a handful of connections: poll costs nothing here.
  unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  if (tls) flags |= MHD_USE_TLS;
  // GnuTLS priorities: its defaults, without anything older than TLS 1.2
  // (Prometheus' minimum), or TLS 1.3 only.
  const char* priorities =
      g->web.min_tls13 ? "NORMAL:-VERS-ALL:+VERS-TLS1.3" : "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
  std::vector<MHD_OptionItem> opts = {
      {MHD_OPTION_LISTEN_SOCKET, own_fd, nullptr},
      {MHD_OPTION_THREAD_POOL_SIZE, std::max(options.threads, 1), nullptr},
      // Handlers parse the KPI file on reload (recursive descent): a full
      // stack, not libmicrohttpd's default.
      {MHD_OPTION_THREAD_STACK_SIZE, 8 << 20, nullptr},
      {MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(options.connection_timeout.count()), nullptr},
      {MHD_OPTION_CONNECTION_LIMIT, 512, nullptr},
      {MHD_OPTION_EXTERNAL_LOGGER, reinterpret_cast<intptr_t>(&MhdLog), nullptr},
  };
  if (tls) {
    opts.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(g->cert.c_str())});
    opts.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(g->key.c_str())});
    opts.push_back({MHD_OPTION_HTTPS_PRIORITIES, 0, const_cast<char*>(priorities)});
    if (!g->ca.empty()) opts.push_back({MHD_OPTION_HTTPS_MEM_TRUST, 0, const_cast<char*>(g->ca.c_str())});
  }
  opts.push_back({MHD_OPTION_END, 0, nullptr});
  last_mhd_error.clear();
  g->daemon = MHD_start_daemon(flags, 0, nullptr, nullptr, &Handle, g, MHD_OPTION_ARRAY, opts.data(), MHD_OPTION_END);
  if (g->daemon == nullptr) {
    return absl::InternalError(fmt::format("cannot start the HTTP server on {}: {}", address,
                                           last_mhd_error.empty() ? "libmicrohttpd gave no reason" : last_mhd_error));
  }
  return absl::OkStatus();
}

// Stops a server that another one has replaced (or at shutdown): it stops
// accepting, the requests in flight get up to `drain` to finish, then it
// stops and its copy of the socket is closed.
static void StopGeneration(Generation* g, std::chrono::milliseconds drain) {
  if (g == nullptr || g->daemon == nullptr) return;
  const int own_fd = MHD_quiesce_daemon(g->daemon);
  const auto deadline = std::chrono::steady_clock::now() + drain;
  while (std::chrono::steady_clock::now() < deadline) {
    const MHD_DaemonInfo* info = MHD_get_daemon_info(g->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (info == nullptr || info->num_connections == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  MHD_stop_daemon(g->daemon);
  g->daemon = nullptr;
  if (own_fd >= 0) ::close(own_fd);
}

void HttpServer::Rep::Watch() {
  std::unique_lock<std::mutex> l(mu);
  std::vector<FileStamp> refused;  // stamps of a configuration already refused: said once
  while (!cv.wait_for(l, options.watch_interval, [&] { return stop; })) {
    const auto now = Stamps(Watched(options.web_config_file, current->web));
    if (now == current->stamps || now == refused) continue;
    auto web = LoadWebConfig(options.web_config_file);
    absl::StatusOr<std::unique_ptr<Generation>> next =
        web.ok() ? Build(*web) : absl::StatusOr<std::unique_ptr<Generation>>(web.status());
    if (!next.ok()) {
      refused = now;
      spdlog::error("http: the changed web configuration ({}) is refused, the running one stays: {}",
                    options.web_config_file, next.status().ToString());
      continue;
    }
    // The new server starts on the socket first; only then does the old
    // one stop accepting, and its requests in flight finish. A new server
    // that cannot start leaves the old one as it was.
    const bool was_tls = !current->cert.empty();
    if (auto st = Start(next->get()); !st.ok()) {
      spdlog::error("http: the changed web configuration could not be served, the running one stays: {}",
                    st.ToString());
      refused = now;
      continue;
    }
    StopGeneration(current.get(), std::chrono::seconds(5));
    current = std::move(*next);
    ++reloads;
    spdlog::info("http: web configuration reloaded from {} ({}, {} user(s){})", options.web_config_file,
                 current->cert.empty() ? "plaintext" : "TLS", current->web.basic_auth_users.size(),
                 was_tls != !current->cert.empty() ? "; the scheme changed" : "");
  }
}

HttpServer::HttpServer(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               HttpHandlers handlers) {
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  rep->handlers = std::move(handlers);
  auto g = rep->Build(options.web);
  if (!g.ok()) return g.status();
  auto fd = Listen(options.listen, &rep->address);
  if (!fd.ok()) return fd.status();
  rep->fd = *fd;
  if (auto st = rep->Start(g->get()); !st.ok()) {
    ::close(rep->fd);  // the server's own copy is closed by libmicrohttpd
    return st;
  }
  rep->current = std::move(*g);
  if (!options.web_config_file.empty()) rep->watcher = std::thread([r = rep.get()] { r->Watch(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(rep)));
}

void HttpServer::Stop() {
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    rep_->stop = true;
  }
  rep_->cv.notify_all();
  if (rep_->watcher.joinable()) rep_->watcher.join();
  std::lock_guard<std::mutex> l(rep_->mu);
  if (rep_->current) {
    StopGeneration(rep_->current.get(), std::chrono::seconds(2));
    rep_->current.reset();
  }
  if (rep_->fd >= 0) {
    ::close(rep_->fd);
    rep_->fd = -1;
  }
}

std::string HttpServer::address() const { return rep_->address; }
uint64_t HttpServer::web_config_reloads() const { return rep_->reloads.load(); }

}  // namespace kpistream::services
