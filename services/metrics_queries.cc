#include "services/metrics.h"

namespace kpistream::services {

namespace prom = prometheus;
namespace {
const auto C = prom::MetricType::Counter;
const auto G = prom::MetricType::Gauge;
}  // namespace

void CollectQueries(const query::QueryService& queries, MetricFamilies* out) {
  {
    const auto st = queries.cache_stats();
    auto f = Family("kpistream_query_cache_requests_total",
                    "KPI queries (gRPC, /metrics, alert rules) by how they were answered: hit (cached result), "
                    "shared (waited for the same query's evaluation in progress) or miss (evaluated).",
                    C);
    f.metric.push_back(Sample(static_cast<double>(st.hits), C, {{"result", "hit"}}));
    f.metric.push_back(Sample(static_cast<double>(st.shared), C, {{"result", "shared"}}));
    f.metric.push_back(Sample(static_cast<double>(st.misses), C, {{"result", "miss"}}));
    out->push_back(std::move(f));
  }
}

void CollectCluster(const ClusterPartialSource::Stats& stats, MetricFamilies* out) {
  auto counter = [&](const char* name, const char* help, const std::atomic<uint64_t>& v) {
    auto f = Family(name, help, C);
    f.metric.push_back(Sample(static_cast<double>(v.load(std::memory_order_relaxed)), C, {}));
    out->push_back(std::move(f));
  };
  counter("kpistream_cluster_snapshots_total", "Cluster-wide reads (one per evaluated gRPC answer).", stats.snapshots);
  counter("kpistream_cluster_peer_reads_total", "Peer snapshot streams opened for cluster-wide reads.",
          stats.peer_reads);
  counter("kpistream_cluster_peer_failures_total",
          "Peers left out of a cluster-wide read (not reachable in time) or failed in the middle of one.",
          stats.peer_failures);
  counter("kpistream_cluster_waits_total",
          "Cluster-wide reads taken again because some partition had no owner (a rebalance), up to cluster.max_wait.",
          stats.waits);
  counter("kpistream_cluster_incomplete_total",
          "Cluster-wide reads answered with partitions missing (listed in the answer's missing_partitions).",
          stats.incomplete);
}

}  // namespace kpistream::services
