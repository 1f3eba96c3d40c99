#include "services/kpid.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "alerting/alerter.h"
#include "alerting/notifier.h"
#include "ingest/engine.h"
#include "ingest/topic_match.h"
#include "query/partial_source.h"
#include "query/query.h"
#include "services/alert_leader.h"
#include "services/config.h"
#include "services/demo.h"
#include "services/grpc_server.h"
#include "services/http_server.h"
#include "services/kpi_watch.h"
#include "services/metrics.h"
#include "state/store.h"

namespace kpistream::services {

namespace {

// Everything a configuration determines: replaced as a whole by a reload.
// Members are destroyed in reverse order of declaration, which is the stop
// order (the alerter before the engine it reads, the engine before the
// catalog it holds references to).
struct Pipeline {
  KpidConfig config;
  kpi::Catalog catalog;
  kpi::StateIds ids;
  std::unique_ptr<ingest::Engine> engine;
  std::unique_ptr<query::LocalPartialSource> source;
  std::unique_ptr<query::QueryService> queries;  // this replica's partitions: /metrics, alerts
  // cluster.peers: every replica's partitions, for gRPC (services/cluster.h).
  std::unique_ptr<ClusterPartialSource> cluster;
  std::unique_ptr<query::QueryService> cluster_queries;
  // Which family a topic of the cluster's partitions is (alert rules' ages).
  std::mutex topic_matcher_mu;
  std::unique_ptr<ingest::TopicMatcher> topic_matcher;
  std::unique_ptr<KpiExport> kpi_export;

  // What gRPC reads: cluster-wide answers when configured.
  ServingView View(std::shared_ptr<const void> owner) const {
    ServingView v{&catalog, cluster_queries ? cluster_queries.get() : queries.get(), alerter.get()};
    if (config.engine.changelog) {
      v.partials = source.get();
      v.ids = &ids;
    }
    v.remote = cluster_queries != nullptr;
    v.owner = std::move(owner);
    return v;
  }
  std::unique_ptr<alerting::Alerter> alerter;
  std::unique_ptr<alerting::Notifier> notifier;

  // Stops in reverse: alerts, then the engine (its final commit), then
  // delivery (which may still send what the last evaluation produced).
  void Stop() {
    if (kpi_export) kpi_export->Stop();
    if (alerter) alerter->Stop();
    if (engine) engine->Stop();
    if (notifier) notifier->Stop();
  }
  ~Pipeline() { Stop(); }
};

// Warns where a measure accepts events later than de-duplication remembers
// their ids.
void WarnDedupWindow(const KpidConfig& config, const kpi::Catalog& catalog) {
  if (config.engine.dedup_window_ms <= 0) return;
  for (const auto& m : catalog.measures) {
    if (m.lateness_ms > config.engine.dedup_window_ms) {
      spdlog::warn(
          "measure {} accepts events {} s late, more than dedup_window ({} s): a duplicate of an event older "
          "than the window is counted again; raise dedup_window to at least the largest lateness",
          m.name, m.lateness_ms / 1000, config.engine.dedup_window_ms / 1000);
    }
  }
}

}  // namespace

struct Kpid::Rep {
  KpidOptions options;
  const state::Clock& clock;
  KpidConfig config;  // as loaded at start (kafka, storage: a reload cannot change them)
  std::unique_ptr<EmbeddedDemo> demo;
  std::string temp_state;
  std::unique_ptr<state::Store> store;
  mutable std::mutex pipeline_mu;
  std::shared_ptr<Pipeline> pipeline;        // guarded by pipeline_mu
  std::unique_ptr<WatchHub> watch;           // outlives the gRPC server's shutdown
  std::unique_ptr<TokenAuthenticator> auth;  // null: no tokens needed; outlives the gRPC server
  std::unique_ptr<GrpcServer> grpc;
  std::unique_ptr<HttpServer> http;
  // This replica's id: its group.instance.id, or one made up at start
  // (services/cluster.h tells peers apart by it).
  std::string replica_id;
  // Replicas (kafka.changelog): the alert leader election and the alert
  // state in Kafka. After store (uses it), stopped before it.
  std::unique_ptr<AlertLeader> alert_leader;
  std::mutex reload_mu;  // one reload at a time
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  bool serving = false, ingesting = false;

  explicit Rep(const state::Clock& c) : clock(c) {}
  // The demo's temporary state goes on every exit path, a failed Create too.
  ~Rep() {
    if (watch) watch->Stop();
    grpc.reset();
    http.reset();
    {
      std::lock_guard<std::mutex> l(pipeline_mu);
      pipeline.reset();
    }
    alert_leader.reset();
    watch.reset();
    auth.reset();
    store.reset();
    if (!temp_state.empty()) std::filesystem::remove_all(temp_state);
  }

  std::shared_ptr<Pipeline> Current() const {
    std::lock_guard<std::mutex> l(pipeline_mu);
    return pipeline;
  }
  absl::StatusOr<std::shared_ptr<Pipeline>> Build(KpidConfig config);
  // Replicas: the current alerter reads the alert state the leader's
  // thread wrote into the store again.
  void ReloadAlerts() const {
    if (!alert_leader) return;
    if (auto p = Current(); p && p->alerter) {
      if (auto st = p->alerter->Reload(); !st.ok()) spdlog::error("alerts: reloading: {}", st.ToString());
    }
  }
  absl::Status StartPipeline(Pipeline* p);
  absl::Status LoadConfig(KpidConfig* out) const;
  // Checks the TLS files and loads the tokens file, before anything binds.
  absl::Status LoadSecurity();
};

absl::Status Kpid::Rep::LoadSecurity() {
  if (auto creds = MakeServerCredentials(config.grpc_tls); !creds.ok()) return creds.status();
  if (config.tokens_file.empty()) return absl::OkStatus();
  auto loaded = TokenAuthenticator::Load(config.tokens_file);
  if (!loaded.ok()) return loaded.status();
  auth = std::move(*loaded);
  spdlog::info("gRPC: {} bearer tokens from {}", auth->size(), config.tokens_file);
  return absl::OkStatus();
}

absl::Status Kpid::Rep::LoadConfig(KpidConfig* out) const {
  if (options.config_path.empty()) {
    *out = config;  // the demo: what Create set up
    return absl::OkStatus();
  }
  auto c = LoadKpidConfig(options.config_path);
  if (!c.ok()) return c.status();
  *out = std::move(*c);
  out->engine.accept_lost_records = options.accept_lost_records;
  if (!options.group_instance_id.empty()) out->engine.kafka_properties["group.instance.id"] = options.group_instance_id;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Pipeline>> Kpid::Rep::Build(KpidConfig cfg) {
  auto p = std::make_shared<Pipeline>();
  p->config = std::move(cfg);
  auto catalog = LoadCatalogFor(p->config);
  if (!catalog.ok()) return catalog.status();
  p->catalog = std::move(*catalog);
  WarnDedupWindow(p->config, p->catalog);
  auto ids = kpi::BindStateIds(p->catalog, store.get());
  if (!ids.ok()) return ids.status();
  for (const auto& msg : ids->reshaped) spdlog::warn("{}", msg);
  p->ids = std::move(*ids);
  auto engine = ingest::Engine::Create(p->config.engine, p->catalog, p->ids, store.get(), clock);
  if (!engine.ok()) return engine.status();
  p->engine = std::move(*engine);
  if (p->config.engine.changelog) {
    // Replicas: answer for the owned partitions only, and name the others.
    auto* owner = p->engine.get();
    p->source = std::make_unique<query::LocalPartialSource>(
        *store,
        [owner] {
          auto o = owner->Owned();
          return query::Ownership{std::move(o.sources), std::move(o.names), std::move(o.missing), o.epoch};
        },
        [owner] { return owner->OwnershipEpoch(); });
  } else {
    p->source = std::make_unique<query::LocalPartialSource>(*store);
  }
  query::QueryOptions qopts;
  qopts.retention = {.fine = store->options().retention_fine_s,
                     .hour = store->options().retention_hour_s,
                     .day = store->options().retention_day_s};
  p->queries = std::make_unique<query::QueryService>(p->catalog, p->ids, *p->source, clock, qopts);
  if (!p->config.cluster.peers.empty() || !p->config.cluster.peers_dns.empty()) {
    auto copts = p->config.cluster;
    copts.replica_id = replica_id;
    auto cluster = ClusterPartialSource::Create(copts, *p->source, p->catalog, p->ids);
    if (!cluster.ok()) return cluster.status();
    p->cluster = std::move(*cluster);
    p->cluster_queries = std::make_unique<query::QueryService>(p->catalog, p->ids, *p->cluster, clock, qopts);
  }
  if (p->cluster_queries && alert_leader) {
    // Replicas answering for each other: the alert leader exports the KPI
    // series, cluster-wide; the others none (PromQL sees each KPI once).
    auto* leader = alert_leader.get();
    p->kpi_export =
        std::make_unique<KpiExport>(p->catalog, *p->cluster_queries, clock, p->config.kpi_export_interval_ms,
                                    [leader] { return leader->leader(); });
  } else {
    p->kpi_export = std::make_unique<KpiExport>(p->catalog, *p->queries, clock, p->config.kpi_export_interval_ms);
  }
  auto* kpi_export = p->kpi_export.get();
  p->engine->AddCommitListener([kpi_export](const ingest::CommitInfo&) { kpi_export->OnCommit(); });
  if (watch) {
    auto* hub = watch.get();
    p->engine->AddCommitListener([hub](const ingest::CommitInfo&) { hub->OnCommit(); });
  }
  // Alerts: nothing changes state from a replay.
  auto* eng = p->engine.get();
  alerting::AlertSources sources;
  sources.caught_up = [eng] { return eng->CaughtUp(); };
  sources.replaying = [eng] { return eng->Replaying(); };
  sources.newest_event_ms = [eng](std::optional<kpi::Family> f) {
    const auto& probe = eng->probe();
    return f ? probe.newest_event_ms_by_family[static_cast<size_t>(*f)].load() : probe.newest_event_ms.load();
  };
  if (auto* leader = alert_leader.get()) {
    // Replicas: one leader evaluates, on cluster-wide values when the
    // replicas answer for each other, and replicates its state.
    sources.active = [leader] { return leader->leader(); };
    sources.replicate = [leader](const std::vector<state::Store::AlertWrite>& w) { return leader->Replicate(w); };
  }
  auto aopts = p->config.alerter;
  if (p->config.alert_clock_event_time) aopts.now_ms = [eng] { return eng->probe().newest_event_ms.load(); };
  if (p->cluster) {
    // Rules judge cluster-wide values: their event-time clock and their
    // absence and freshness checks read every replica's partitions too.
    auto matcher =
        ingest::TopicMatcher::Create(p->config.engine.topics, p->config.engine.dlq_topic, p->config.engine.group_id);
    if (!matcher.ok()) return matcher.status();
    p->topic_matcher = std::move(*matcher);
    auto* cl = p->cluster.get();
    auto* pipe = p.get();
    sources.newest_event_ms = [cl, pipe](std::optional<kpi::Family> f) {
      if (!f) return cl->NewestEventMs(nullptr);
      return cl->NewestEventMs([pipe, f](const std::string& topic) {
        std::lock_guard<std::mutex> l(pipe->topic_matcher_mu);
        const auto* b = pipe->topic_matcher->Find(topic);
        return b != nullptr && b->family == *f;
      });
    };
    if (p->config.alert_clock_event_time) aopts.now_ms = [cl] { return cl->NewestEventMs(nullptr); };
  }
  const query::QueryService& rule_queries = p->cluster_queries ? *p->cluster_queries : *p->queries;
  auto alerter = alerting::Alerter::Create(aopts, p->catalog, rule_queries, store.get(), sources, clock);
  if (!alerter.ok()) return alerter.status();
  p->alerter = std::move(*alerter);
  auto* alerter_ptr = p->alerter.get();
  p->engine->AddCommitListener([alerter_ptr](const ingest::CommitInfo&) { alerter_ptr->OnCommit(); });
  return p;
}

absl::Status Kpid::Rep::StartPipeline(Pipeline* p) {
  auto n = p->config.notifier;
  if (auto* leader = alert_leader.get()) n.active = [leader] { return leader->leader(); };
  if (!n.alertmanagers.empty() || !n.webhooks.empty()) {
    auto notifier = alerting::Notifier::Start(n, p->alerter.get(), clock);
    if (!notifier.ok()) return notifier.status();
    p->notifier = std::move(*notifier);
  }
  if (auto st = p->engine->Start(); !st.ok()) return st;
  p->alerter->Start();
  return absl::OkStatus();
}

Kpid::Kpid(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}

Kpid::~Kpid() { Stop(std::chrono::steady_clock::now() + std::chrono::seconds(30)); }

absl::StatusOr<std::unique_ptr<Kpid>> Kpid::Create(const KpidOptions& options, const state::Clock& clock,
                                                   int* exit_code) {
  auto rep = std::make_unique<Rep>(clock);
  rep->options = options;
  *exit_code = kExitConfig;
  std::string state_dir = options.state_dir;
  if (options.config_path.empty()) {
    DemoOptions dopts;
    dopts.rate = options.demo_rate;
    auto demo = EmbeddedDemo::Start(dopts);
    if (!demo.ok()) return demo.status();
    rep->demo = std::move(*demo);
    rep->config.engine = rep->demo->EngineOptions();
    for (const auto& url : options.demo_alertmanagers) rep->config.notifier.alertmanagers.push_back({.url = url});
    if (state_dir.empty()) {
      // The mock broker starts empty every time, so the demo's state must too.
      rep->temp_state =
          (std::filesystem::temp_directory_path() / fmt::format("kpistream-demo-{}", ::getpid())).string();
      state_dir = rep->temp_state;
    }
  } else if (auto st = rep->LoadConfig(&rep->config); !st.ok()) {
    return st;
  }
  if (auto st = rep->LoadSecurity(); !st.ok()) return st;
  {
    const auto& props = rep->config.engine.kafka_properties;
    auto it = props.find("group.instance.id");
    if (it != props.end() && !it->second.empty()) {
      rep->replica_id = it->second;
    } else {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      rep->replica_id = fmt::format("{}-{}-{:08x}", host, ::getpid(), std::random_device{}());
    }
  }
  if (state_dir.empty()) state_dir = "kpistream-state";
  state::StoreOptions sopts;
  sopts.path = state_dir;
  // memory_budget_mb, split (invariant 6): half to RocksDB's cache with the
  // memtables charged to it, a quarter to the dirty partials, an eighth to
  // librdkafka's prefetch queue (both set by the config), and an eighth left
  // for the table readers' filters, gRPC, librdkafka's own buffers and code.
  sopts.cache_bytes = rep->config.memory_budget_bytes / 2;
  sopts.min_free_bytes = rep->config.min_free_disk_bytes;
  if (rep->config.retention_fine_s) sopts.retention_fine_s = *rep->config.retention_fine_s;
  if (rep->config.retention_hour_s) sopts.retention_hour_s = *rep->config.retention_hour_s;
  if (rep->config.retention_day_s) sopts.retention_day_s = *rep->config.retention_day_s;
  auto store = state::Store::Open(sopts);
  if (!store.ok()) {
    *exit_code = kExitState;
    return store.status();
  }
  rep->store = std::move(*store);
  {
    Rep* r = rep.get();
    rep->watch = std::make_unique<WatchHub>(
        [r] {
          auto p = r->Current();
          return p->View(p);
        },
        clock, rep->config.watch);
  }
  if (rep->config.engine.changelog) {
    Rep* r = rep.get();
    auto reload = [r] { r->ReloadAlerts(); };
    auto leader =
        AlertLeader::Start(rep->config.engine, rep->store.get(), {.followed = reload, .leading = [r](bool on) {
                                                                    if (auto p = r->Current(); on && p && p->alerter)
                                                                      p->alerter->OnCommit();
                                                                  }});
    if (!leader.ok()) return leader.status();
    rep->alert_leader = std::move(*leader);
  }
  auto pipeline = rep->Build(rep->config);
  if (!pipeline.ok()) return pipeline.status();
  {
    std::lock_guard<std::mutex> l(rep->pipeline_mu);  // the alert leader's thread reads it
    rep->pipeline = std::move(*pipeline);
  }
  rep->ReloadAlerts();  // what the alert leader read while it was built
  std::unique_ptr<Kpid> kpid(new Kpid(std::move(rep)));
  *exit_code = kExitListen;
  if (auto st = kpid->Bind(); !st.ok()) return st;
  *exit_code = kExitOk;
  return kpid;
}

absl::Status Kpid::Bind() {
  Rep* r = rep_.get();
  auto view = [r] {
    auto p = r->Current();
    return p->View(p);
  };
  auto grpc = GrpcServer::Start({.listen = r->options.grpc_listen,
                                 .watch = r->watch.get(),
                                 .max_batch = r->config.max_batch,
                                 .tls = r->config.grpc_tls,
                                 .auth = r->auth.get(),
                                 .replica_id = r->config.engine.changelog ? r->replica_id : ""},
                                view, r->clock);
  if (!grpc.ok()) return grpc.status();
  r->grpc = std::move(*grpc);
  HttpHandlers handlers;
  handlers.collect = [r](MetricFamilies* out) {
    auto p = r->Current();
    if (!p) return;
    CollectBuildInfo(out);
    CollectProcess(out);
    if (r->grpc) r->grpc->metrics().Collect(out);
    if (r->watch) r->watch->Collect(out);
    CollectEngine(*p->engine, p->catalog, r->clock, out);
    CollectStore(*r->store, out);
    CollectQueries(*p->queries, out);
    if (p->cluster) CollectCluster(p->cluster->stats(), out);
    CollectAlerting(*p->alerter, p->notifier.get(), out,
                    r->alert_leader ? std::optional<bool>(r->alert_leader->leader()) : std::nullopt);
    p->kpi_export->Collect(out);
  };
  handlers.healthy = [this] { return Healthy(); };
  handlers.ready = [this] { return Ready(); };
  handlers.reload = [this] { return Reload(); };
  auto http = HttpServer::Create(
      {.listen = r->options.metrics_listen, .web = r->config.web, .web_config_file = r->config.web_config_file},
      std::move(handlers));
  if (!http.ok()) return http.status();
  r->http = std::move(*http);
  return absl::OkStatus();
}

absl::Status Kpid::Start() {
  if (rep_->started.exchange(true)) return absl::FailedPreconditionError("kpid already started");
  return rep_->StartPipeline(rep_->Current().get());
}

bool Kpid::Stop(std::chrono::steady_clock::time_point deadline) {
  if (rep_->stopping.exchange(true)) return true;
  // Everything below runs on a thread of its own, so that the deadline holds
  // whatever Kafka does (a final commit waits for the dead-letter topic; the
  // consumer leaves its group).
  // `done` is shared: a stopper past the deadline outlives this call.
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread stopper([this, done] {
    if (rep_->grpc) rep_->grpc->SetServing(false, false);
    if (rep_->watch) rep_->watch->Stop();  // watch streams end before the server waits for them
    {
      std::shared_ptr<Pipeline> p;
      {
        std::lock_guard<std::mutex> l(rep_->pipeline_mu);
        p = rep_->pipeline;
      }
      if (p) {
        // Alerts first, then the lead (leaving the election group: another
        // replica leads at once), then the engine's final commit.
        if (p->kpi_export) p->kpi_export->Stop();
        if (p->alerter) p->alerter->Stop();
        if (rep_->alert_leader) rep_->alert_leader->Stop();
        p->Stop();
      }
    }
    if (rep_->alert_leader) rep_->alert_leader->Stop();
    if (rep_->grpc) rep_->grpc->Shutdown();
    if (rep_->http) rep_->http->Stop();
    if (rep_->demo) rep_->demo->Stop();
    {
      std::lock_guard<std::mutex> l(rep_->pipeline_mu);
      rep_->pipeline.reset();
    }
    rep_->grpc.reset();
    rep_->http.reset();
    rep_->alert_leader.reset();
    rep_->store.reset();
    if (!rep_->temp_state.empty()) std::filesystem::remove_all(rep_->temp_state);
    *done = true;
  });
  while (!*done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!*done) {
    stopper.detach();  // the caller exits now; the OS reclaims the rest
    return false;
  }
  stopper.join();
  return true;
}

absl::Status Kpid::Reload() {
  std::lock_guard<std::mutex> reload(rep_->reload_mu);
  if (rep_->stopping) return absl::FailedPreconditionError("kpid is stopping");
  KpidConfig config;
  if (auto st = rep_->LoadConfig(&config); !st.ok()) {
    return absl::InvalidArgumentError(fmt::format("the configuration was not reloaded: {}", std::string(st.message())));
  }
  // Validated before anything stops: a bad KPI file keeps the running one.
  if (auto catalog = LoadCatalogFor(config); !catalog.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("the configuration was not reloaded: {}", std::string(catalog.status().message())));
  }
  // The tokens file first: a bad one fails the reload before the pipeline
  // is touched, and the tokens in use stay.
  if (rep_->auth) {
    if (auto st = rep_->auth->Reload(); !st.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("the configuration was not reloaded: {}", std::string(st.message())));
    }
  }
  const auto& running = rep_->config;
  if (config.grpc_tls.cert_file != running.grpc_tls.cert_file ||
      config.grpc_tls.key_file != running.grpc_tls.key_file ||
      config.grpc_tls.client_ca_file != running.grpc_tls.client_ca_file || config.tokens_file != running.tokens_file ||
      config.max_batch != running.max_batch) {
    spdlog::warn("reload: grpc settings changed in {} take effect at the next restart", rep_->options.config_path);
  }
  // The web configuration file's content (users, certificates) is watched
  // by the HTTP server and applied as it changes; its path is not.
  if (config.web_config_file != running.web_config_file) {
    spdlog::warn("reload: http.web_config_file now names another file; that takes effect at the next restart");
  }
  if (config.engine.brokers != running.engine.brokers || config.engine.group_id != running.engine.group_id ||
      config.memory_budget_bytes != running.memory_budget_bytes ||
      config.retention_fine_s != running.retention_fine_s || config.retention_hour_s != running.retention_hour_s ||
      config.retention_day_s != running.retention_day_s) {
    spdlog::warn(
        "reload: kafka.brokers, kafka.group_id, memory_budget_mb and retention changed in {} take effect at the "
        "next restart",
        rep_->options.config_path);
    config.engine.brokers = running.engine.brokers;
    config.engine.group_id = running.engine.group_id;
    config.memory_budget_bytes = running.memory_budget_bytes;
    config.retention_fine_s = running.retention_fine_s;
    config.retention_hour_s = running.retention_hour_s;
    config.retention_day_s = running.retention_day_s;
  }
  auto old = rep_->Current();
  // The old pipeline stops first: its final commit is what the new one
  // starts from, and a partition is never applied by two engines at once.
  old->Stop();
  auto fresh = rep_->Build(std::move(config));
  absl::Status st = fresh.ok() ? rep_->StartPipeline(fresh->get()) : fresh.status();
  if (!st.ok()) {
    // Back to the running configuration (its files are still valid).
    spdlog::error("reload failed ({}); restarting the running configuration", st.ToString());
    auto again = rep_->Build(old->config);
    if (!again.ok() || !rep_->StartPipeline(again->get()).ok()) {
      return absl::InternalError(
          fmt::format("reload failed and the running configuration could not restart: {}", st.ToString()));
    }
    fresh = std::move(again);
  }
  {
    std::lock_guard<std::mutex> l(rep_->pipeline_mu);
    rep_->pipeline = std::move(*fresh);
  }
  rep_->ReloadAlerts();  // what the alert leader read while it was built
  if (!st.ok()) return st;
  spdlog::info("reloaded: {} measures, {} KPIs, {} alert rules", rep_->Current()->catalog.measures.size(),
               rep_->Current()->catalog.kpis.size(), rep_->Current()->catalog.alerts.size());
  return absl::OkStatus();
}

std::optional<absl::Status> Kpid::Poll() {
  auto p = rep_->Current();
  if (!p) return std::nullopt;
  if (auto fatal = p->engine->Fatal()) return fatal;
  const bool reads = Ready().ok();
  const bool ingesting = p->engine->Ready();
  if (reads != rep_->serving || ingesting != rep_->ingesting) {
    rep_->grpc->SetServing(reads, ingesting);
    spdlog::info("health: reads {}, ingestion {}", reads ? "SERVING" : "NOT_SERVING",
                 ingesting ? "SERVING" : "NOT_SERVING");
    rep_->serving = reads;
    rep_->ingesting = ingesting;
  }
  return std::nullopt;
}

absl::Status Kpid::Healthy() const {
  auto p = rep_->Current();
  if (!p) return absl::UnavailableError("kpid is stopping");
  if (auto fatal = p->engine->Fatal()) return *fatal;
  return absl::OkStatus();
}

absl::Status Kpid::Ready() const {
  if (!rep_->started || rep_->stopping) return absl::UnavailableError("kpid is starting or stopping");
  auto p = rep_->Current();
  if (!p) return absl::UnavailableError("kpid is stopping");
  if (auto fatal = p->engine->Fatal()) return *fatal;
  // Reads need the state store, not Kafka: a broker outage leaves kpid
  // ready (answers say how fresh they are), only ingestion stops.
  return absl::OkStatus();
}

std::string Kpid::grpc_address() const { return rep_->grpc ? rep_->grpc->address() : ""; }
std::string Kpid::metrics_address() const { return rep_->http ? rep_->http->address() : ""; }

std::string Kpid::Banner() const {
  auto p = rep_->Current();
  std::string out = fmt::format("kpid {}: {} KPIs, {} alert rules, state in {}\n",
                                rep_->demo ? "running the embedded demo" : "consuming " + p->config.engine.brokers,
                                p->catalog.kpis.size(), p->catalog.alerts.size(), rep_->store->options().path);
  out += fmt::format("  gRPC     {}   (grpcurl -plaintext {} list)\n", grpc_address(), grpc_address());
  out += fmt::format("  metrics  http://{}/metrics   (health: /-/healthy, /-/ready)\n", metrics_address());
  return out;
}

}  // namespace kpistream::services
