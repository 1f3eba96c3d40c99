#include "services/metrics.h"

#include "services/version.h"

namespace kpistream::services {

namespace prom = prometheus;

prom::MetricFamily Family(std::string name, std::string help, prom::MetricType type) {
  prom::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

prom::ClientMetric Sample(double v, prom::MetricType type, MetricLabels labels) {
  prom::ClientMetric m;
  m.label = std::move(labels);
  if (type == prom::MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  return m;
}

void AddCounter(MetricFamilies* out, const char* name, const char* help, double value) {
  auto f = Family(name, help, prom::MetricType::Counter);
  f.metric.push_back(Sample(value, prom::MetricType::Counter));
  out->push_back(std::move(f));
}

void AddGauge(MetricFamilies* out, const char* name, const char* help, double value) {
  auto f = Family(name, help, prom::MetricType::Gauge);
  f.metric.push_back(Sample(value, prom::MetricType::Gauge));
  out->push_back(std::move(f));
}

void CollectBuildInfo(MetricFamilies* out) {
  auto f = Family("kpistream_build_info", "kpid's version and the git revision it was built from; always 1.",
                  prometheus::MetricType::Gauge);
  f.metric.push_back(Sample(1, prometheus::MetricType::Gauge,
                            {{"revision", std::string(Revision())}, {"version", std::string(Version())}}));
  out->push_back(std::move(f));
}

}  // namespace kpistream::services
