// gRPC server metrics, in the names go-grpc-prometheus made the convention
// (and Grafana's gRPC dashboards expect):
//   grpc_server_started_total{grpc_service, grpc_method}
//   grpc_server_handled_total{grpc_service, grpc_method, grpc_code}
//   grpc_server_handling_seconds{grpc_service, grpc_method} (histogram;
//     for streams, the stream's whole life)
// collected by a server interceptor (grpcpp/support/server_interceptor.h,
// gRPC's own hook; it sees unary, streaming and callback methods alike).
//
// Thread-safety: the interceptors run on gRPC's threads; Collect from any
// thread.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/metrics.h"

namespace kpistream::services {

class GrpcMetrics {
 public:
  // Upper bounds of the latency histogram, seconds.
  static constexpr std::array<double, 12> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1,    2.5};

  // The interceptor factory to give grpc::ServerBuilder (it keeps a pointer
  // to this object). REQUIRES: this outlives the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> Factory();
  void Collect(MetricFamilies* out) const;

  // For the interceptor.
  void Started(const std::string& method);
  void Handled(const std::string& method, grpc::StatusCode code, double seconds);

 private:
  struct PerMethod {
    uint64_t started = 0;
    std::map<int, uint64_t> handled;  // by code
    std::array<uint64_t, kBounds.size() + 1> buckets{};
    double sum = 0;
    uint64_t count = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, PerMethod> methods_;  // "/package.Service/Method"; guarded by mu_
};

}  // namespace kpistream::services
