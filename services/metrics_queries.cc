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

}  // namespace kpistream::services
