#include "services/grpc_metrics.h"

#include <chrono>

namespace kpistream::services {

namespace prom = prometheus;
namespace gx = grpc::experimental;

namespace {

class MetricsInterceptor final : public gx::Interceptor {
 public:
  MetricsInterceptor(GrpcMetrics* metrics, std::string method) : metrics_(metrics), method_(std::move(method)) {}
  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = std::chrono::steady_clock::now();
      metrics_->Started(method_);
    }
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const auto code = methods->GetSendStatus().error_code();
      metrics_->Handled(method_, code,
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  GrpcMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class MetricsInterceptorFactory final : public gx::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcMetrics* metrics) : metrics_(metrics) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info->method() ? info->method() : "");
  }

 private:
  GrpcMetrics* metrics_;
};

// The canonical status code names (grpc/status.h), as go-grpc-prometheus labels them.
const char* CodeName(int code) {
  static const char* const kNames[] = {
      "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  return code >= 0 && code < static_cast<int>(std::size(kNames)) ? kNames[code] : "Unknown";
}

// "/kpistream.v1.KpiService/GetKpi" -> ("kpistream.v1.KpiService", "GetKpi").
std::pair<std::string, std::string> Split(const std::string& method) {
  const auto slash = method.rfind('/');
  if (slash == std::string::npos || slash == 0) return {"", method};
  return {method.substr(1, slash - 1), method.substr(slash + 1)};
}

}  // namespace

std::unique_ptr<gx::ServerInterceptorFactoryInterface> GrpcMetrics::Factory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

void GrpcMetrics::Started(const std::string& method) {
  std::lock_guard<std::mutex> l(mu_);
  ++methods_[method].started;
}

void GrpcMetrics::Handled(const std::string& method, grpc::StatusCode code, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  auto& m = methods_[method];
  ++m.handled[static_cast<int>(code)];
  size_t b = 0;
  while (b < kBounds.size() && seconds > kBounds[b]) ++b;
  ++m.buckets[b];
  m.sum += seconds;
  ++m.count;
}

void GrpcMetrics::Collect(MetricFamilies* out) const {
  const auto C = prom::MetricType::Counter;
  auto started = Family("grpc_server_started_total", "RPCs started on the server.", C);
  auto handled = Family("grpc_server_handled_total", "RPCs completed on the server, by status code.", C);
  auto latency =
      Family("grpc_server_handling_seconds", "Time from an RPC's start to its status (for streams, their whole life).",
             prom::MetricType::Histogram);
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [method, m] : methods_) {
    const auto [service, name] = Split(method);
    const MetricLabels labels{{"grpc_method", name}, {"grpc_service", service}};
    started.metric.push_back(Sample(static_cast<double>(m.started), C, labels));
    for (const auto& [code, n] : m.handled) {
      auto cl = labels;
      cl.push_back({"grpc_code", CodeName(code)});
      handled.metric.push_back(Sample(static_cast<double>(n), C, std::move(cl)));
    }
    prom::ClientMetric h;
    h.label = {{"grpc_method", name}, {"grpc_service", service}};
    h.histogram.sample_count = m.count;
    h.histogram.sample_sum = m.sum;
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kBounds.size(); ++b) {
      cumulative += m.buckets[b];
      h.histogram.bucket.push_back(
          {cumulative, b < kBounds.size() ? kBounds[b] : std::numeric_limits<double>::infinity()});
    }
    latency.metric.push_back(std::move(h));
  }
  out->push_back(std::move(started));
  out->push_back(std::move(handled));
  out->push_back(std::move(latency));
}

}  // namespace kpistream::services
