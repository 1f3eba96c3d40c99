// WatchKpis: live KPI answers pushed to clients.
//
// The hub keeps one subscription per distinct query (KPI, window, group-by,
// filter, order, limit), however many streams watch it, and re-evaluates
// every subscription on its own thread after a commit (the engine's commit
// notification), at most once per `interval`, and at least once per
// interval while anything is watched (a rolling window moves with the
// clock). A subscription whose answer changed (values, statuses, covered
// interval; not freshness or the consistency token alone) is delivered to
// each of its streams.
//
// A stream (gRPC callback API: no thread per stream) holds at most one
// pending answer per query, the newest: a client that reads slowly skips
// intermediate answers, and its memory is bounded by its queries, never by
// how long it lags; ingest never waits for it. It sends at most one answer
// per query per its min_interval.
//
// Thread-safety: all methods from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kpistream/v1/kpi.pb.h"
#include "services/grpc_server.h"
#include "services/metrics.h"
#include "state/clock.h"

namespace kpistream::services {

struct WatchOptions {
  int64_t interval_ms = 1000;  // the least time between two evaluations of a subscription
  size_t max_streams = 10000;  // concurrent WatchKpis streams
  size_t max_queries = 100;    // queries per stream
};

class WatchHub {
 public:
  // REQUIRES: view and clock outlive the hub.
  WatchHub(ServingViewFn view, const state::Clock& clock, WatchOptions options);
  ~WatchHub();  // Stop()
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // A commit happened: re-evaluate soon (at most once per interval).
  void OnCommit();
  // Ends every stream with UNAVAILABLE and stops evaluating. Idempotent.
  void Stop();

  // The reactor of one WatchKpis call (refusing it with the status when the
  // request is invalid or a limit is reached).
  grpc::ServerWriteReactor<v1::WatchKpisResponse>* Watch(grpc::CallbackServerContext* ctx,
                                                         const v1::WatchKpisRequest* req);

  // kpistream_watch_* for /metrics.
  void Collect(MetricFamilies* out) const;

 private:
  class Stream;
  struct Subscription;
  void Run();
  void EvaluateAll();
  // Evaluates one subscription; true if its answer changed.
  bool Evaluate(Subscription* sub);
  void Remove(Stream* stream);

  ServingViewFn view_;
  const state::Clock& clock_;
  const WatchOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                          // guarded by mu_
  bool committed_ = false;                                     // guarded by mu_
  int64_t last_commit_ms_ = 0;                                 // wall clock of the newest commit; guarded by mu_
  std::map<std::string, std::shared_ptr<Subscription>> subs_;  // by canonical query; guarded by mu_
  std::set<Stream*> streams_;                                  // guarded by mu_
  uint64_t evaluations_ = 0, sent_ = 0, skipped_ = 0;          // guarded by mu_
  std::thread thread_;
};

}  // namespace kpistream::services
