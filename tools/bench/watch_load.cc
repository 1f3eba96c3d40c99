// WatchKpis load: opens many watch streams on one kpid and measures what
// each watcher sees, as one JSON line on stdout when done.
//
//   kpistream_watch_load --addr host:port --streams 10000 --seconds 30
//       --kpis impressions,clicks,ctr --windows 1h,24h [--channels 50]
//       [--no-read] [--min-interval-ms 1000] [--stop-file PATH]
//
// Stream i watches one query: kpis[i % K] over windows[(i / K) % W], so
// K x W distinct subscriptions are shared by all the streams. Streams use
// gRPC's callback API (no thread per stream) spread over --channels
// connections. Each answer's latency is its arrival minus its committed_at
// (kpid's wall clock at the commit it reflects; same machine, same clock).
// The first answer of each stream (the current value, not a change) is
// timed from the stream's start instead.
//
// --no-read: each stream reads its first answer and then never again, as a
// stalled client; kpid must keep its memory bounded regardless.
//
// Output: {"streams", "open", "messages", "errors", "first_p50_ms",
// "first_p99_ms", "p50_ms", "p99_ms", "max_ms", "samples"}; exit 1 when a
// stream ended with an error other than the final cancellation.
#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include <absl/strings/str_split.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kpistream/v1/kpi.grpc.pb.h"

namespace {

namespace v1 = kpistream::v1;
using Clock = std::chrono::steady_clock;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Results {
  std::mutex mu;
  std::vector<double> first_ms, change_ms;  // guarded by mu
  std::atomic<uint64_t> messages{0}, errors{0}, open{0};
};

class Watcher final : public grpc::ClientReadReactor<v1::WatchKpisResponse> {
 public:
  Watcher(v1::KpiService::Stub* stub, const v1::WatchKpisRequest& req, bool read_on, Results* results)
      : read_on_(read_on), results_(results), start_(Clock::now()) {
    ctx_.AddMetadata("x-bench", "watch");
    stub->async()->WatchKpis(&ctx_, &req, this);
    StartRead(&resp_);
    StartCall();
  }
  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) results_->open.fetch_add(1);
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone has the status
    const int64_t now = WallMs();
    results_->messages.fetch_add(1);
    {
      std::lock_guard<std::mutex> l(results_->mu);
      if (first_) {
        results_->first_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start_).count());
      } else if (resp_.has_committed_at()) {
        results_->change_ms.push_back(
            static_cast<double>(now - google::protobuf::util::TimeUtil::TimestampToMilliseconds(resp_.committed_at())));
      }
    }
    first_ = false;
    if (read_on_) StartRead(&resp_);
  }
  void OnDone(const grpc::Status& s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      if (results_->errors.fetch_add(1) < 3)
        fmt::print(stderr, "watch ended: {} {}\n", int(s.error_code()), s.error_message());
    }
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Cancel() { ctx_.TryCancel(); }
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return done_; });
  }

 private:
  grpc::ClientContext ctx_;
  v1::WatchKpisResponse resp_;
  const bool read_on_;
  Results* results_;
  const Clock::time_point start_;
  bool first_ = true;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

double Quantile(std::vector<double>* v, double q) {
  if (v->empty()) return 0;
  std::sort(v->begin(), v->end());
  return (*v)[static_cast<size_t>(q * static_cast<double>(v->size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"WatchKpis streams under load: latency from a commit to each watcher"};
  std::string addr = "127.0.0.1:50051", kpis = "impressions,clicks,ctr", windows = "1h,24h";
  int streams = 1000, channels = 50, min_interval_ms = 0;
  double seconds = 10;
  bool no_read = false;
  app.add_option("--addr", addr)->capture_default_str();
  app.add_option("--streams", streams)->capture_default_str();
  app.add_option("--channels", channels, "connections the streams are spread over")->capture_default_str();
  app.add_option("--kpis", kpis, "comma-separated")->capture_default_str();
  app.add_option("--windows", windows, "comma-separated")->capture_default_str();
  app.add_option("--seconds", seconds, "how long the streams stay open")->capture_default_str();
  app.add_option("--min-interval-ms", min_interval_ms, "the request's min_interval (0: kpid's)");
  app.add_flag("--no-read", no_read, "read the first answer only, then stall");
  std::string stop_file;
  app.add_option("--stop-file", stop_file, "stop early once this file exists");
  CLI11_PARSE(app, argc, argv);
  const std::vector<std::string> kpi_list = absl::StrSplit(kpis, ',');
  const std::vector<std::string> window_list = absl::StrSplit(windows, ',');

  std::vector<std::unique_ptr<v1::KpiService::Stub>> stubs;
  for (int c = 0; c < std::max(channels, 1); ++c) {
    grpc::ChannelArguments args;
    args.SetInt("kpistream.bench.channel", c);  // distinct arguments: a connection each
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stubs.push_back(v1::KpiService::NewStub(grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args)));
  }
  Results results;
  std::vector<std::unique_ptr<Watcher>> watchers;
  watchers.reserve(static_cast<size_t>(streams));
  for (int i = 0; i < streams; ++i) {
    v1::WatchKpisRequest req;
    auto* q = req.add_queries();
    q->set_kpi(kpi_list[static_cast<size_t>(i) % kpi_list.size()]);
    q->set_window(window_list[(static_cast<size_t>(i) / kpi_list.size()) % window_list.size()]);
    if (min_interval_ms > 0)
      *req.mutable_min_interval() = google::protobuf::util::TimeUtil::MillisecondsToDuration(min_interval_ms);
    watchers.push_back(
        std::make_unique<Watcher>(stubs[static_cast<size_t>(i) % stubs.size()].get(), req, !no_read, &results));
  }
  fmt::print(stderr, "watch_load: {} streams started\n", streams);
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < until && (stop_file.empty() || !std::filesystem::exists(stop_file))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& w : watchers) w->Cancel();
  for (auto& w : watchers) w->Wait();
  std::lock_guard<std::mutex> l(results.mu);
  const size_t samples = results.change_ms.size();
  const double max_ms = samples ? *std::max_element(results.change_ms.begin(), results.change_ms.end()) : 0;
  fmt::print(
      "{{\"streams\": {}, \"open\": {}, \"messages\": {}, \"errors\": {}, \"first_p50_ms\": {:.1f}, "
      "\"first_p99_ms\": {:.1f}, \"p50_ms\": {:.1f}, \"p99_ms\": {:.1f}, \"max_ms\": {:.1f}, \"samples\": {}}}\n",
      streams, results.open.load(), results.messages.load(), results.errors.load(), Quantile(&results.first_ms, 0.5),
      Quantile(&results.first_ms, 0.99), Quantile(&results.change_ms, 0.5), Quantile(&results.change_ms, 0.99), max_ms,
      samples);
  return results.errors.load() == 0 ? 0 : 1;
}
