// kpistream.v1.AlertService on gRPC's callback API: a WatchAlerts stream is a
// reactor woken by the alerter, so a watcher holds no thread while it waits.
//
// Thread-safety: the service is driven by gRPC's threads and the alerter's.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "alerting/alerter.h"
#include "kpistream/v1/alerts.pb.h"
#include "services/grpc_auth.h"
#include "services/grpc_server.h"

namespace kpistream::services {

// The alerter is the current view's (swapped by a reload: watch streams of
// the old one end with UNAVAILABLE and the sequence to resume from). Every
// call needs the `alerts` scope when `auth` is set (services/grpc_auth.h).
std::unique_ptr<grpc::Service> MakeAlertService(ServingViewFn view, TokenAuthenticator* auth);

// An alert in the API's shape: times as timestamps, labels and annotations
// made valid UTF-8 (services/utf8.h). The fingerprint is kpid's identity of
// the alert, computed from the raw bytes.
v1::Alert ToApi(const alerting::Alert& a);

}  // namespace kpistream::services
