#include "tests/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

namespace kpistream::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string KpidBin() { return KPISTREAM_KPID_BIN; }
std::string KpigenBin() { return KPISTREAM_KPIGEN_BIN; }
std::string KafkaLocalScript() { return KPISTREAM_KAFKA_LOCAL; }

TempDir::TempDir(const std::string& tag) {
  std::random_device rd;
  path_ = (fs::temp_directory_path() /
           ("kpistream-it-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 100000)))
              .string();
  fs::remove_all(path_);
  fs::create_directories(path_);
}
TempDir::~TempDir() {
  if (!std::getenv("KPISTREAM_KEEP_TEST_DIRS")) fs::remove_all(path_);
}

Process::Process(std::vector<std::string> argv, std::string log_path) : log_(std::move(log_path)) {
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);
    // The server dies with the test: a test that aborts (a sanitizer
    // report, a crash) must not leave kpid or Prometheus running into the
    // next tests of the same CI run.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the test died before prctl
    const int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (Running()) {
    Signal(SIGKILL);
    Wait(10s);
  }
}

bool Process::Running() {
  if (pid_ <= 0 || status_) return false;
  int st = 0;
  const pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !status_) kill(pid_, sig);
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  return status_;
}

std::string Process::LogTail(size_t bytes) const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

int RunToEnd(const std::vector<std::string>& argv, const std::string& log_path, std::chrono::seconds timeout) {
  Process p(argv, log_path);
  auto rc = p.Wait(timeout);
  if (!rc) {
    p.Signal(SIGKILL);
    p.Wait(10s);
    return -1;
  }
  return *rc;
}

KafkaBroker::KafkaBroker(const std::string& dir) : dir_(dir) {
  const auto log = dir + "/kafka-local.log";
  const auto rc = RunToEnd({"/bin/bash", KafkaLocalScript(), "start", "--dir", dir + "/kafka", "--partitions", "4",
                            // Lets a restarted kpid replace a killed member quickly.
                            "--prop", "group.min.session.timeout.ms=1000"},
                           log, 300s);
  std::ifstream in(dir + "/kafka/bootstrap");
  std::getline(in, bootstrap_);
  if (rc != 0 || bootstrap_.empty()) {
    std::ifstream l(log);
    std::stringstream ss;
    ss << l.rdbuf();
    error_ = "kafka-local start failed (" + std::to_string(rc) + "): " + ss.str();
    bootstrap_.clear();
  }
}

bool KafkaBroker::Stop() {
  return RunToEnd({"/bin/bash", KafkaLocalScript(), "stop", "--dir", dir_ + "/kafka"}, dir_ + "/kafka-local.log",
                  60s) == 0;
}

bool KafkaBroker::Restart() {
  return RunToEnd({"/bin/bash", KafkaLocalScript(), "restart", "--dir", dir_ + "/kafka"}, dir_ + "/kafka-local.log",
                  300s) == 0;
}

KafkaBroker::~KafkaBroker() {
  RunToEnd({"/bin/bash", KafkaLocalScript(), "stop", "--dir", dir_ + "/kafka"}, dir_ + "/kafka-local.log", 60s);
}

SchemaRegistry::SchemaRegistry(const std::string& dir) : dir_(dir + "/registry") { Start(); }

bool SchemaRegistry::Start(int port) {
  const auto log = dir_ + ".start.log";
  std::vector<std::string> argv = {"/bin/bash", KPISTREAM_REGISTRY_LOCAL, "start", "--dir", dir_};
  if (port > 0) {
    argv.push_back("--port");
    argv.push_back(std::to_string(port));
  }
  std::filesystem::remove(dir_ + "/url");
  const auto rc = RunToEnd(argv, log, 300s);
  std::ifstream in(dir_ + "/url");
  url_.clear();
  std::getline(in, url_);
  if (rc != 0 || url_.empty()) {
    std::ifstream l(log);
    std::stringstream ss;
    ss << l.rdbuf();
    error_ = "registry-local start failed (" + std::to_string(rc) + "): " + ss.str();
    url_.clear();
    return false;
  }
  // http://127.0.0.1:PORT/...
  port_ = std::atoi(url_.c_str() + url_.find(':', 5) + 1);
  return true;
}

bool SchemaRegistry::Restart() { return Start(port_); }

void SchemaRegistry::Stop() {
  RunToEnd({"/bin/bash", KPISTREAM_REGISTRY_LOCAL, "stop", "--dir", dir_}, dir_ + ".stop.log", 60s);
}

SchemaRegistry::~SchemaRegistry() { Stop(); }

std::string WriteKpidConfig(const KpidOptions& o) {
  const auto cfg = o.work_dir + "/kpid.yaml";
  std::string props;
  for (const auto& [k, v] : o.kafka_properties) props += "    " + k + ": \"" + v + "\"\n";
  const std::string topics = o.kafka_sources.empty() ? "  topics:\n    campaign: " + o.topic_prefix +
                                                           "campaign\n    product: " + o.topic_prefix +
                                                           "product\n    crm: " + o.topic_prefix + "crm\n"
                                                     : o.kafka_sources;
  std::ofstream(cfg) << "kafka:\n  brokers: " << o.brokers << "\n  group_id: " << o.group_id
                     << "\n  dlq_topic: " << o.topic_prefix << "dlq\n"
                     << (o.changelog ? "  changelog: true\n" : "") << o.kafka_extra << topics
                     << "  properties:\n    session.timeout.ms: \"3000\"\n    heartbeat.interval.ms: \"500\"\n"
                     << props << "commit_interval: " << o.commit_interval_ms << "ms\n"
                     << o.extra_config;
  return cfg;
}

Kpid::Kpid(const KpidOptions& o) : o_(o) {
  const auto cfg = WriteKpidConfig(o);
  info_path_ = o.work_dir + "/listen-info";
  fs::remove(info_path_);
  std::vector<std::string> argv{KpidBin(),     "--config",      cfg,           "--state-dir",
                                o.state_dir,   "--grpc-listen", o.grpc_listen, "--metrics-listen",
                                "127.0.0.1:0", "--listen-info", info_path_};
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  proc_ = std::make_unique<Process>(std::move(argv), o.work_dir + "/kpid.log");
}

bool Kpid::WaitStarted(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!proc_->Running()) return false;
    std::ifstream in(info_path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("grpc=", 0) == 0) grpc_ = line.substr(5);
      if (line.rfind("metrics=", 0) == 0) metrics_ = line.substr(8);
    }
    if (!grpc_.empty() && !metrics_.empty()) {
      auto ch = grpc::CreateChannel(grpc_, o_.credentials ? o_.credentials : grpc::InsecureChannelCredentials());
      stub_ = v1::KpiService::NewStub(ch);
      health_ = grpc::health::v1::Health::NewStub(ch);
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

bool Kpid::WaitServing(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && proc_->Running()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 1s);
    grpc::health::v1::HealthCheckResponse resp;
    if (health_->Check(&ctx, {}, &resp).ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::string Kpid::Scrape() const { return HttpGet(metrics_, "/metrics"); }

HttpResponse HttpCall(const std::string& host_port, const std::string& method, const std::string& path) {
  // A minimal HTTP/1.0 request over a socket keeps the tests free of an HTTP client.
  const auto colon = host_port.rfind(':');
  std::string escaped;  // printf's format: a literal % is %%
  for (char c : path) escaped += c == '%' ? std::string("%%") : std::string(1, c);
  const std::string cmd = "exec 3<>/dev/tcp/" + host_port.substr(0, colon) + "/" + host_port.substr(colon + 1) +
                          " && printf '" + method + " " + escaped +
                          " HTTP/1.0\\r\\nContent-Length: 0\\r\\n\\r\\n' >&3 && cat <&3";
  FILE* f = popen(("/bin/bash -c \"" + cmd + "\" 2>/dev/null").c_str(), "r");
  HttpResponse r;
  if (!f) return r;
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  // "HTTP/1.1 200 OK\r\n..."
  const auto sp = out.find(' ');
  if (out.rfind("HTTP/", 0) != 0 || sp == std::string::npos) return r;
  r.status = std::atoi(out.c_str() + sp + 1);
  const auto body = out.find("\r\n\r\n");
  if (body != std::string::npos) r.body = out.substr(body + 4);
  return r;
}

bool WaitCaughtUp(Kpid& kpid, std::chrono::seconds timeout, int partitions) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::steady_clock::time_point zero_since{};  // epoch: lag not 0 in the last scrape
  std::string last;
  while (std::chrono::steady_clock::now() < deadline && kpid.process().Running()) {
    last = kpid.Scrape();
    if (MetricSum(last, "kpistream_assigned_partitions") == partitions &&
        MetricCount(last, "kpistream_consumer_lag_records") == partitions &&
        MetricSum(last, "kpistream_consumer_lag_records") == 0) {
      if (zero_since == std::chrono::steady_clock::time_point{}) zero_since = std::chrono::steady_clock::now();
      if (std::chrono::steady_clock::now() - zero_since >= 3s) return true;
    } else {
      zero_since = {};
    }
    std::this_thread::sleep_for(100ms);
  }
  std::istringstream lines(last);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("lag_records") != std::string::npos || line.find("fetch_stalls") != std::string::npos ||
        line.find("records_consumed") != std::string::npos) {
      std::printf("not caught up: %s\n", line.c_str());
    }
  }
  return false;
}

std::string HttpGet(const std::string& host_port, const std::string& path) {
  auto r = HttpCall(host_port, "GET", path);
  return r.status == 0 ? "" : r.body;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  if (fd >= 0) close(fd);
  return port;
}

// One connection at a time is plenty for a test receiver: both Alertmanager's
// webhook and kpid's notifier send one small request per connection or reuse
// a keep-alive connection sequentially.
struct HttpSink::Rep {
  int listen_fd = -1;
  int port = 0;
  std::atomic<bool> stop{false};
  mutable std::mutex mu;
  std::vector<std::string> bodies, headers;
  std::thread thread;

  void Serve(int fd) {
    std::string buf;
    char chunk[8192];
    while (!stop.load()) {
      // Reads one request (headers, then Content-Length bytes of body).
      size_t header_end;
      while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!ReadSome(fd, chunk, sizeof(chunk), buf)) return;
      }
      std::string headers = buf.substr(0, header_end);
      std::string lower = headers;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t content_length = 0;
      if (auto p = lower.find("content-length:"); p != std::string::npos) {
        content_length = std::stoul(lower.substr(p + 15));
      }
      if (lower.find("expect: 100-continue") != std::string::npos) {
        const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
        if (write(fd, cont.data(), cont.size()) < 0) return;
      }
      while (buf.size() < header_end + 4 + content_length) {
        if (!ReadSome(fd, chunk, sizeof(chunk), buf)) return;
      }
      const std::string body = buf.substr(header_end + 4, content_length);
      buf.erase(0, header_end + 4 + content_length);
      if (headers.rfind("POST", 0) == 0) {
        std::lock_guard<std::mutex> l(mu);
        bodies.push_back(body);
        this->headers.push_back(headers);
      }
      const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
      if (write(fd, resp.data(), resp.size()) < 0) return;
    }
  }

  bool ReadSome(int fd, char* chunk, size_t size, std::string& buf) {
    while (!stop.load()) {
      pollfd p{fd, POLLIN, 0};
      const int r = poll(&p, 1, 100);
      if (r < 0) return false;
      if (r == 0) continue;
      const ssize_t n = read(fd, chunk, size);
      if (n <= 0) return false;
      buf.append(chunk, static_cast<size_t>(n));
      return true;
    }
    return false;
  }

  void Loop() {
    while (!stop.load()) {
      pollfd p{listen_fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const int fd = accept(listen_fd, nullptr, nullptr);
      if (fd < 0) continue;
      Serve(fd);
      close(fd);
    }
  }
};

HttpSink::HttpSink() : rep_(std::make_unique<Rep>()) {
  rep_->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(rep_->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(rep_->listen_fd, 16) != 0 || getsockname(rep_->listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("HttpSink: cannot listen on loopback");
  }
  rep_->port = ntohs(addr.sin_port);
  rep_->thread = std::thread([r = rep_.get()] { r->Loop(); });
}

HttpSink::~HttpSink() {
  rep_->stop = true;
  rep_->thread.join();
  close(rep_->listen_fd);
}

std::string HttpSink::url() const { return "http://127.0.0.1:" + std::to_string(rep_->port) + "/"; }

std::vector<std::string> HttpSink::Bodies() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->bodies;
}

std::vector<std::string> HttpSink::Headers() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return rep_->headers;
}

namespace {

// True once something accepts TCP connections on 127.0.0.1:port.
bool PortOpen(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool MakeCertificates(const std::string& dir) {
  const std::string script = fmt::format(R"(set -e
cd '{}'
key() {{ openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }}
ca() {{ key "$1"; openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 2 -subj "/CN=$1"; }}
cert() {{  # name CN CA extension-line
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
}}
ca ca
ca other-ca
cert server localhost ca 'subjectAltName=IP:127.0.0.1,DNS:localhost'
cert client kpictl ca 'extendedKeyUsage=clientAuth'
cert stranger stranger other-ca 'extendedKeyUsage=clientAuth'
cert serveronly localhost ca 'extendedKeyUsage=serverAuth'
)",
                                         dir);
  const auto path = dir + "/make-certs.sh";
  std::ofstream(path) << script;
  return RunToEnd({"/bin/bash", path}, dir + "/make-certs.log", 60s) == 0;
}

Alertmanager::Alertmanager(const std::string& dir, const std::string& webhook_url, int port,
                           const std::string& web_config)
    : port_(port), tls_(!web_config.empty()) {
  fs::create_directories(dir + "/data");
  std::ofstream(dir + "/alertmanager.yml") << "route:\n"
                                              "  receiver: sink\n"
                                              "  group_by: [alertname]\n"
                                              "  group_wait: 1s\n"
                                              "  group_interval: 1s\n"
                                              "  repeat_interval: 1h\n"
                                              "receivers:\n"
                                              "  - name: sink\n"
                                              "    webhook_configs:\n"
                                              "      - url: \""
                                           << webhook_url << "\"\n        send_resolved: true\n";
  std::vector<std::string> argv{"/usr/bin/prometheus-alertmanager", "--config.file=" + dir + "/alertmanager.yml",
                                "--storage.path=" + dir + "/data", "--web.listen-address=" + address(),
                                "--cluster.listen-address="};
  if (!web_config.empty()) argv.push_back("--web.config.file=" + web_config);
  proc_ = std::make_unique<Process>(std::move(argv), dir + "/alertmanager.log");
}

Alertmanager::~Alertmanager() {
  proc_->Signal(SIGTERM);
  if (!proc_->Wait(10s)) proc_->Signal(SIGKILL);
}

bool Alertmanager::WaitReady(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && proc_->Running()) {
    if (tls_ ? PortOpen(port_) : HttpGet(address(), "/-/ready").find("OK") != std::string::npos) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

Prometheus::Prometheus(const std::string& dir, const std::vector<std::string>& targets,
                       const std::vector<std::string>& rule_files, int port, const std::string& scrape_extra)
    : port_(port) {
  fs::create_directories(dir + "/data");
  std::ofstream cfg(dir + "/prometheus.yml");
  cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n";
  if (!rule_files.empty()) {
    cfg << "rule_files:\n";
    for (const auto& f : rule_files) cfg << "  - \"" << f << "\"\n";
  }
  cfg << "scrape_configs:\n  - job_name: kpistream\n" << scrape_extra << "    static_configs:\n      - targets: [";
  for (size_t i = 0; i < targets.size(); ++i) cfg << (i ? ", " : "") << "\"" << targets[i] << "\"";
  cfg << "]\n";
  cfg.close();
  proc_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + dir + "/prometheus.yml",
                               "--storage.tsdb.path=" + dir + "/data", "--web.listen-address=" + address()},
      dir + "/prometheus.log");
}

Prometheus::~Prometheus() {
  proc_->Signal(SIGTERM);
  if (!proc_->Wait(10s)) proc_->Signal(SIGKILL);
}

bool Prometheus::WaitReady(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && proc_->Running()) {
    if (HttpCall(address(), "GET", "/-/ready").status == 200) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

std::string Prometheus::Query(const std::string& promql) const {
  std::string enc;
  for (unsigned char c : promql) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      enc.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      enc += buf;
    }
  }
  return HttpGet(address(), "/api/v1/query?query=" + enc);
}

namespace {
// As PromQL's `k="v"`: an empty v also matches a sample without the label.
bool LabelsMatch(const std::string& labels, const std::map<std::string, std::string>& want) {
  for (const auto& [k, v] : want) {
    const bool has = labels.find(k + "=\"" + v + "\"") != std::string::npos;
    if (!has && !(v.empty() && labels.find(k + "=\"") == std::string::npos)) return false;
  }
  return true;
}
}  // namespace

double MetricSum(const std::string& text, const std::string& name, const std::map<std::string, std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    std::string lbl;
    if (next == '{') lbl = line.substr(name.size(), line.find('}') - name.size() + 1);
    if (!LabelsMatch(lbl, labels)) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

int MetricCount(const std::string& text, const std::string& name, const std::map<std::string, std::string>& labels) {
  int n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    std::string lbl;
    if (next == '{') lbl = line.substr(name.size(), line.find('}') - name.size() + 1);
    if (LabelsMatch(lbl, labels)) ++n;
  }
  return n;
}

int MetricCount(const std::string& text, const std::string& name) {
  int n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, name.size() + 1, name + "{") == 0 || line.compare(0, name.size() + 1, name + " ") == 0) ++n;
  }
  return n;
}

std::optional<Truth> ReadTruth(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  Truth t;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "window_start") ls >> t.window_start;
    if (kind == "window_end") ls >> t.window_end;
    if (kind == "records") ls >> t.records;
    if (kind == "good") ls >> t.good;
    if (kind == "rejected") {
      std::string r;
      uint64_t n;
      ls >> r >> n;
      t.rejected[r] = n;
    }
    if (kind == "kpi") {
      std::string name, window, v, flag;
      ls >> name >> window >> v >> flag;
      t.kpis[{name, window}] = {v == "none" ? std::nullopt : std::optional<double>(std::stod(v)), flag == "approx"};
    }
  }
  return t;
}

std::vector<std::string> ReadTopicHeader(const std::string& brokers, const std::string& topic,
                                         const std::string& header, size_t expected, std::chrono::seconds timeout) {
  std::vector<std::string> out;
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", ("reader-" + topic).c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  rd_kafka_poll_set_consumer(rk);
  auto* subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto quiet_until = std::chrono::steady_clock::time_point::max();
  while (std::chrono::steady_clock::now() < deadline) {
    // Once the expected number arrived, keep reading a little to catch extras.
    if (out.size() >= expected && quiet_until == std::chrono::steady_clock::time_point::max()) {
      quiet_until = std::chrono::steady_clock::now() + 3s;
    }
    if (std::chrono::steady_clock::now() > quiet_until) break;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (!m->err) {
      rd_kafka_headers_t* hdrs = nullptr;
      std::string v;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const void* val;
        size_t sz;
        if (rd_kafka_header_get_last(hdrs, header.c_str(), &val, &sz) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          v.assign(static_cast<const char*>(val), sz);
        }
      }
      out.push_back(v);
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

bool DeleteAllRecords(const std::string& brokers, const std::string& topic, int partitions) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) return false;
  auto* offsets = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(offsets, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_END;
  }
  rd_kafka_DeleteRecords_t* del = rd_kafka_DeleteRecords_new(offsets);
  rd_kafka_topic_partition_list_destroy(offsets);
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_DeleteRecords(rk, &del, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  bool ok = ev != nullptr && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR;
  if (ok) {
    const auto* res = rd_kafka_event_DeleteRecords_result(ev);
    const auto* parts = res ? rd_kafka_DeleteRecords_result_offsets(res) : nullptr;
    for (int i = 0; parts && i < parts->cnt; ++i) ok &= parts->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_DeleteRecords_destroy(del);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  return ok;
}

bool SetTopicConfig(const std::string& brokers, const std::string& topic, const std::string& name,
                    const std::string& value) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) return false;
  rd_kafka_ConfigResource_t* res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  rd_kafka_ConfigResource_set_config(res, name.c_str(), value.c_str());
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_AlterConfigs(rk, &res, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  bool ok = ev != nullptr && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR;
  if (ok) {
    size_t n = 0;
    const auto* result = rd_kafka_event_AlterConfigs_result(ev);
    const auto** resources = result ? rd_kafka_AlterConfigs_result_resources(result, &n) : nullptr;
    for (size_t i = 0; i < n; ++i) ok &= rd_kafka_ConfigResource_error(resources[i]) == RD_KAFKA_RESP_ERR_NO_ERROR;
    ok &= n == 1;
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_ConfigResource_destroy(res);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  return ok;
}

bool ProduceRecord(const std::string& brokers, const std::string& topic, const std::string& key,
                   const std::string& payload) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "message.max.bytes", "16777216", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) return false;
  bool ok = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_KEY(key.data(), key.size()),
                              RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                              RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR;
  ok &= rd_kafka_flush(rk, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR && rd_kafka_outq_len(rk) == 0;
  rd_kafka_destroy(rk);
  return ok;
}

bool CreateTopics(const std::string& brokers, const std::vector<std::string>& topics, int partitions,
                  const std::map<std::string, std::string>& configs) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) return false;
  std::vector<rd_kafka_NewTopic_t*> nts;
  for (const auto& t : topics) {
    nts.push_back(rd_kafka_NewTopic_new(t.c_str(), partitions, 1, err, sizeof(err)));
    for (const auto& [name, value] : configs) {
      if (rd_kafka_NewTopic_set_config(nts.back(), name.c_str(), value.c_str())) {
        std::fprintf(stderr, "topic config %s=%s refused\n", name.c_str(), value.c_str());
        for (auto* nt : nts) rd_kafka_NewTopic_destroy(nt);
        rd_kafka_destroy(rk);
        return false;
      }
    }
  }
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, nts.data(), nts.size(), nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  bool ok = ev != nullptr && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR;
  if (ok) {
    size_t n = 0;
    const auto* res = rd_kafka_event_CreateTopics_result(ev);
    const auto** results = res ? rd_kafka_CreateTopics_result_topics(res, &n) : nullptr;
    for (size_t i = 0; i < n; ++i) {
      const auto e = rd_kafka_topic_result_error(results[i]);
      ok &= e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  for (auto* nt : nts) rd_kafka_NewTopic_destroy(nt);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  return ok;
}

std::optional<std::vector<KeyedRecord>> ReadPartition(const std::string& brokers, const std::string& topic,
                                                      int32_t partition, std::chrono::seconds timeout) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", "kpistream-test-reader", err, sizeof(err));
  rd_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!rk) return std::nullopt;
  rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic.c_str(), partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  std::vector<KeyedRecord> out;
  bool ok = false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (!m) continue;
    const bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
    if (!m->err) {
      KeyedRecord r;
      if (m->key) r.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload) r.value = std::string(static_cast<const char*>(m->payload), m->len);
      out.push_back(std::move(r));
    } else if (!eof) {
      std::fprintf(stderr, "reading %s[%d]: %s\n", topic.c_str(), partition, rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
    if (eof) {
      ok = true;
      break;
    }
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  if (!ok) return std::nullopt;
  return out;
}

bool ProduceTransaction(const std::string& brokers, const std::string& transactional_id, const std::string& topic,
                        const std::vector<std::string>& payloads, bool commit) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "transactional.id", transactional_id.c_str(), err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) return false;
  auto done = [&](rd_kafka_error_t* e) {
    if (!e) return true;
    std::fprintf(stderr, "transaction: %s\n", rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return false;
  };
  bool ok = done(rd_kafka_init_transactions(rk, 30000)) && done(rd_kafka_begin_transaction(rk));
  for (const auto& p : payloads) {
    ok = ok && rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_VALUE(const_cast<char*>(p.data()), p.size()),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  if (ok) {
    ok = commit ? done(rd_kafka_commit_transaction(rk, 30000))
                : (rd_kafka_flush(rk, 30000), done(rd_kafka_abort_transaction(rk, 30000)));
  }
  rd_kafka_destroy(rk);
  return ok;
}

std::vector<TopicRecord> ReadTopic(const std::string& brokers, const std::string& topic, size_t at_least,
                                   std::chrono::seconds timeout) {
  std::vector<TopicRecord> out;
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", ("reader-" + std::to_string(::getpid()) + topic).c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!rk) return out;
  rd_kafka_poll_set_consumer(rk);
  auto* subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
    if (!m) {
      // Enough, and nothing new for 2 s: done.
      if (out.size() >= at_least && std::chrono::steady_clock::now() - quiet_since > std::chrono::seconds(2)) break;
      continue;
    }
    if (!m->err) {
      TopicRecord r;
      r.payload.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* hs = nullptr;
      if (rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
          r.headers[name] = std::string(static_cast<const char*>(value), size);
        }
      }
      out.push_back(std::move(r));
      quiet_since = std::chrono::steady_clock::now();
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

}  // namespace kpistream::testing
