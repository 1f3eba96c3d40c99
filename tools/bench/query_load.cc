// GetKpi load generator: calls GetKpi at a fixed total rate from a few
// threads (a late call does not move the next ones' schedule)
// and reports latency percentiles as one JSON line.
//   kpistream_query_load --addr host:port --kpi ctr --window 5m --rate 5000 --seconds 10
// --group-by "channel,region": a breakdown on several dimensions;
// --batch N: BatchGetKpis with N queries (the KPIs of --kpi, comma-separated,
// repeated) instead of GetKpi; the rate is then of BatchGetKpis calls.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include <absl/strings/str_split.h>

#include "kpistream/v1/kpi.grpc.pb.h"

namespace {

void SetQuery(kpistream::v1::GetKpiRequest* q, const std::string& kpi, const std::string& window,
              const std::string& group_by) {
  q->set_kpi(kpi);
  q->set_window(window);
  q->set_group_by(group_by);
}

grpc::Status CallOne(kpistream::v1::KpiService::Stub& stub, grpc::ClientContext* ctx, const std::string& kpi,
                     const std::string& window, const std::string& group_by) {
  kpistream::v1::GetKpiRequest req;
  SetQuery(&req, kpi, window, group_by);
  kpistream::v1::GetKpiResponse resp;
  return stub.GetKpi(ctx, req, &resp);
}

// Every query of the batch must be answered, not only the call.
grpc::Status CallBatch(kpistream::v1::KpiService::Stub& stub, grpc::ClientContext* ctx,
                       const std::vector<std::string>& kpis, const std::string& window, const std::string& group_by,
                       int n) {
  kpistream::v1::BatchGetKpisRequest req;
  for (int i = 0; i < n; ++i) SetQuery(req.add_queries(), kpis[static_cast<size_t>(i) % kpis.size()], window, group_by);
  kpistream::v1::BatchGetKpisResponse resp;
  auto st = stub.BatchGetKpis(ctx, req, &resp);
  for (const auto& r : resp.results()) {
    if (st.ok() && r.error_code() != 0) st = grpc::Status(grpc::StatusCode::UNKNOWN, r.error_message());
  }
  return st;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GetKpi latency under a fixed query rate"};
  std::string addr = "127.0.0.1:50051", kpi = "ctr", window = "5m", group_by;
  double rate = 1000, seconds = 10;
  int threads = 4, batch = 0;
  app.add_option("--addr", addr)->capture_default_str();
  app.add_option("--kpi", kpi)->capture_default_str();
  app.add_option("--window", window)->capture_default_str();
  app.add_option("--group-by", group_by);
  app.add_option("--rate", rate, "GetKpi calls per second, all threads together")->capture_default_str();
  app.add_option("--seconds", seconds)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--batch", batch, "BatchGetKpis with this many queries (0: GetKpi)");
  CLI11_PARSE(app, argc, argv);

  const std::vector<std::string> kpis = absl::StrSplit(kpi, ',');
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now() + std::chrono::milliseconds(100);
  const auto total = static_cast<uint64_t>(rate * seconds);
  std::atomic<uint64_t> next{0}, errors{0};
  std::mutex mu;
  std::vector<double> lat_us;
  lat_us.reserve(total);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      auto stub = kpistream::v1::KpiService::NewStub(channel);
      std::vector<double> mine;
      while (true) {
        const uint64_t i = next.fetch_add(1);
        if (i >= total) break;
        const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(static_cast<double>(i) / rate));
        std::this_thread::sleep_until(due);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        const auto t0 = Clock::now();
        const auto s = batch > 0 ? CallBatch(*stub, &ctx, kpis, window, group_by, batch)
                                 : CallOne(*stub, &ctx, kpis.front(), window, group_by);
        // Latency of the call itself (t0 is never before due). When the
        // threads cannot keep up, calls start late instead: achieved_rate
        // falls below the offered rate, which the report shows.
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        if (!s.ok()) errors.fetch_add(1);
        mine.push_back(us);
      }
      std::lock_guard<std::mutex> l(mu);
      lat_us.insert(lat_us.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(lat_us.begin(), lat_us.end());
  auto q = [&](double p) { return lat_us.empty() ? 0.0 : lat_us[static_cast<size_t>(p * (lat_us.size() - 1))]; };
  fmt::print(
      "{{\"calls\": {}, \"errors\": {}, \"achieved_rate\": {:.0f}, \"p50_ms\": {:.3f}, \"p99_ms\": {:.3f}, "
      "\"max_ms\": {:.3f}}}\n",
      lat_us.size(), errors.load(), static_cast<double>(lat_us.size()) / elapsed, q(0.5) / 1000, q(0.99) / 1000,
      lat_us.empty() ? 0 : lat_us.back() / 1000);
  return errors.load() == 0 ? 0 : 1;
}
