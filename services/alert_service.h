// kpistream.v1.AlertService on gRPC's callback API: a WatchAlerts stream is a
// reactor woken by the alerter, so a watcher holds no thread while it waits.
//
// Thread-safety: the service is driven by gRPC's threads and the alerter's.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "services/alerter.h"

namespace kpistream::services {

// REQUIRES: alerter outlives the server the service is registered with.
std::unique_ptr<grpc::Service> MakeAlertService(Alerter* alerter);

}  // namespace kpistream::services
