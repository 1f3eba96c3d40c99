// kpistream.v1.AlertService on gRPC's callback API: a WatchAlerts stream is a
// reactor woken by the alerter, so a watcher holds no thread while it waits.
//
// Thread-safety: the service is driven by gRPC's threads and the alerter's.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "alerting/alerter.h"
#include "kpistream/v1/alerts.pb.h"

namespace kpistream::services {

// REQUIRES: alerter outlives the server the service is registered with.
std::unique_ptr<grpc::Service> MakeAlertService(alerting::Alerter* alerter);

// An alert in the API's shape: times as timestamps, labels and annotations
// made valid UTF-8 (services/utf8.h). The fingerprint is kpid's identity of
// the alert, computed from the raw bytes.
v1::Alert ToApi(const alerting::Alert& a);

}  // namespace kpistream::services
