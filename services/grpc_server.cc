#include "services/grpc_server.h"

#include "services/grpc_metrics.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "api/request.h"
#include "kpistream/v1/kpi.grpc.pb.h"
#include "query/query.h"
#include "services/alert_service.h"
#include "services/grpc_reflection.h"
#include "services/kpi_answers.h"
#include "services/kpi_watch.h"
#include "services/partials_service.h"
#include "services/utf8.h"

namespace kpistream::services {

namespace v1 = kpistream::v1;
using google::protobuf::util::TimeUtil;

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// A few threads for GetKpi answers that wait on peers (ServingView::remote):
// a callback handler must not block gRPC's own threads. Hand-written: no
// library on the list has an executor (gRPC's is internal).
class Workers {
 public:
  explicit Workers(size_t n) {
    for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~Workers() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // False (and fn dropped) when kMaxQueued tasks already wait.
  bool Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (queue_.size() >= kMaxQueued) return false;
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
    return true;
  }
  static constexpr size_t kMaxQueued = 1024;

 private:
  void Run() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// GetKpi uses gRPC's callback API: the handler runs on the thread that read
// the request, without the synchronous server's hand-off to a worker thread
// (on 2 cores, thread switches were half of kpid's time under 5k GetKpi/s;
// docs/BENCHMARKS.md). It is short: usually a cached result, at most one
// evaluation. ListKpis and QueryRange (up to 11 000 points) stay synchronous.
class KpiServiceImpl final : public v1::KpiService::WithCallbackMethod_GetKpi<
                                 v1::KpiService::WithCallbackMethod_WatchKpis<v1::KpiService::Service>> {
 public:
  KpiServiceImpl(ServingViewFn view, const state::Clock& clock, const GrpcServerOptions& options)
      : view_(std::move(view)), clock_(clock), options_(options) {}

  grpc::Status ListKpis(grpc::ServerContext* ctx, const v1::ListKpisRequest*, v1::ListKpisResponse* resp) override {
    if (auto st = Authorize(options_.auth, *ctx, Scope::kRead); !st.ok()) return st;
    const ServingView view = view_();
    const kpi::Catalog& catalog_ = *view.catalog;
    for (const auto& k : catalog_.kpis) {
      auto* info = resp->add_kpis();
      info->set_name(k.name);
      info->set_help(k.help);
      info->set_unit(k.unit);
      info->set_formula(k.formula);
      for (const auto& w : k.windows) info->add_windows(w);
      for (const auto& d : catalog_.KpiDimensions(k)) info->add_dimensions(d);
      for (int mi : k.measures) info->add_measures(catalog_.measures[mi].name);
      if (k.target) {
        auto* t = info->mutable_target();
        t->set_direction(k.target->higher_is_better ? "higher" : "lower");
        if (k.target->excellent) t->set_excellent(*k.target->excellent);
        if (k.target->good) t->set_good(*k.target->good);
        if (k.target->warning) t->set_warning(*k.target->warning);
        if (k.target->critical) t->set_critical(*k.target->critical);
      }
    }
    for (const auto& m : catalog_.measures) {
      auto* info = resp->add_measures();
      info->set_name(m.name);
      info->set_family(std::string(kpi::FamilyName(m.family)));
      for (const auto& t : m.type_names) info->add_types(t);
      info->set_aggregation(std::string(kpi::AggregationName(m.aggregation)));
      info->set_field(m.field);
      for (const auto& g : m.group_by) info->add_group_by(g);
      info->set_bucket_seconds(m.bucket_seconds);
    }
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* GetKpi(grpc::CallbackServerContext* ctx, const v1::GetKpiRequest* req,
                                   v1::GetKpiResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    if (auto st = Authorize(options_.auth, *ctx, Scope::kRead); !st.ok()) {
      reactor->Finish(st);
      return reactor;
    }
    ServingView view = view_();
    if (view.remote) {
      // The context, request and response live until Finish.
      const bool queued = workers_.Submit([this, view = std::move(view), ctx, reactor, req, resp] {
        if (ctx->IsCancelled()) {  // the caller gave up (or its deadline passed) while it waited
          reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled before it was answered"));
          return;
        }
        reactor->Finish(ToGrpc(services::AnswerGetKpi(view, clock_, *req, resp)));
      });
      if (!queued) {
        reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "too many cluster-wide GetKpi calls are waiting for their peers; retry"));
      }
    } else {
      reactor->Finish(ToGrpc(services::AnswerGetKpi(view, clock_, *req, resp)));
    }
    return reactor;
  }

  grpc::Status BatchGetKpis(grpc::ServerContext* ctx, const v1::BatchGetKpisRequest* req,
                            v1::BatchGetKpisResponse* resp) override {
    if (auto st = Authorize(options_.auth, *ctx, Scope::kRead); !st.ok()) return st;
    return ToGrpc(AnswerBatch(view_(), clock_, *req, options_.max_batch, resp));
  }

  grpc::ServerWriteReactor<v1::WatchKpisResponse>* WatchKpis(grpc::CallbackServerContext* ctx,
                                                             const v1::WatchKpisRequest* req) override {
    if (auto st = Authorize(options_.auth, *ctx, Scope::kRead); !st.ok()) {
      return FinishedStream<v1::WatchKpisResponse>(st);
    }
    if (!options_.watch) {
      return FinishedStream<v1::WatchKpisResponse>(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "watch streams are not served here"));
    }
    return options_.watch->Watch(ctx, req);
  }

  grpc::Status QueryRange(grpc::ServerContext* ctx, const v1::QueryRangeRequest* req,
                          v1::QueryRangeResponse* resp) override {
    if (auto st = Authorize(options_.auth, *ctx, Scope::kRead); !st.ok()) return st;
    const ServingView view = view_();
    const kpi::Catalog& catalog_ = *view.catalog;
    const query::QueryService& query_ = *view.queries;
    auto plan = api::PlanQueryRange(*req, catalog_);
    if (!plan.ok()) return ToGrpc(plan.status());
    auto answer = query_.Range(plan->query, plan->step, plan->window);
    if (!answer.ok()) return ToGrpc(answer.status());
    if (answer->watermark_ms > 0) {
      *resp->mutable_watermark() = TimeUtil::MillisecondsToTimestamp(answer->watermark_ms);
      resp->set_freshness_seconds(std::max(0.0, static_cast<double>(clock_.NowMs() - answer->watermark_ms) / 1000.0));
    }
    resp->set_consistency_token(ConsistencyToken(answer->positions));
    for (const auto& m : answer->missing_partitions) resp->add_missing_partitions(m);
    const auto* series = &answer->series;
    resp->set_kpi(req->kpi());
    if (const auto* kpi = catalog_.FindKpi(req->kpi())) resp->set_unit(kpi->unit);
    for (const auto& s : *series) {
      auto* out = resp->add_series();
      for (const auto& [k, v] : s.group) (*out->mutable_group())[k] = ValidUtf8(v);
      for (const auto& p : s.points) {
        auto* pt = out->add_points();
        *pt->mutable_time() = TimeUtil::SecondsToTimestamp(p.time);
        if (p.value) pt->set_value(*p.value);
        pt->set_open(p.open);
      }
    }
    return grpc::Status::OK;
  }

 private:
  ServingViewFn view_;
  const state::Clock& clock_;
  const GrpcServerOptions options_;
  Workers workers_{8};  // last: joined before the rest goes
};

}  // namespace

struct GrpcServer::Rep {
  GrpcMetrics metrics;  // before the server: its interceptors point here
  std::unique_ptr<KpiServiceImpl> service;
  std::unique_ptr<grpc::Service> alert_service;
  std::unique_ptr<grpc::Service> partials_service;
  std::unique_ptr<grpc::Service> reflection_v1;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

GrpcServer::GrpcServer(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
GrpcServer::~GrpcServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options, ServingViewFn view,
                                                              const state::Clock& clock) {
  auto rep = std::make_unique<Rep>();
  rep->service = std::make_unique<KpiServiceImpl>(view, clock, options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC binds with SO_REUSEPORT by default: a second kpid on the same port
  // would share it silently, calls alternating between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  auto credentials = MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  int port = 0;
  builder.AddListeningPort(options.listen, *credentials, &port);
  builder.RegisterService(rep->service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MalformedRequestInterceptorFactory());  // first: the metrics see its code
  interceptors.push_back(rep->metrics.Factory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  if (options.alerts) {
    rep->alert_service = MakeAlertService(view, options.auth);
    builder.RegisterService(rep->alert_service.get());
  }
  if (!options.replica_id.empty()) {
    rep->partials_service = MakePartialsService(view, options.replica_id, options.auth);
    builder.RegisterService(rep->partials_service.get());
  }
  std::vector<std::string> services = {"kpistream.v1.KpiService", "grpc.health.v1.Health",
                                       "grpc.reflection.v1.ServerReflection",
                                       "grpc.reflection.v1alpha.ServerReflection"};
  if (options.alerts) services.push_back("kpistream.v1.AlertService");
  std::sort(services.begin(), services.end());
  rep->reflection_v1 = MakeReflectionV1Service(std::move(services));
  builder.RegisterService(rep->reflection_v1.get());
  rep->server = builder.BuildAndStart();
  if (!rep->server || port == 0) {
    return absl::UnavailableError(fmt::format(
        "cannot listen for gRPC on {}: the address is in use (another kpid?) or not a host:port", options.listen));
  }
  const auto colon = options.listen.rfind(':');
  rep->address = fmt::format("{}:{}", options.listen.substr(0, colon), port);
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer(std::move(rep)));
  server->SetServing(false, false);
  return server;
}

std::string GrpcServer::address() const { return rep_->address; }

void GrpcServer::SetServing(bool reads, bool ingesting) {
  if (!rep_->server) return;
  auto* health = rep_->server->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(reads);
  health->SetServingStatus("kpistream.v1.KpiService", reads);
  health->SetServingStatus("kpistream.v1.AlertService", reads);
  health->SetServingStatus("kpistream.ingest", ingesting);
}

const GrpcMetrics& GrpcServer::metrics() const { return rep_->metrics; }

void GrpcServer::Shutdown() {
  if (rep_->server) {
    rep_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    rep_->server->Wait();
    rep_->server.reset();
  }
}

}  // namespace kpistream::services
