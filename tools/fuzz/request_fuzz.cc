// libFuzzer target: the query API's request validation (api/request.h,
// what the gRPC GetKpi and QueryRange handlers run) and the queries valid
// requests lead to, over a real RocksDB store holding a little data for the
// default catalog. Any request either fails with NOT_FOUND or
// INVALID_ARGUMENT and a message, or succeeds with a window the response can
// carry; nothing crashes, hangs or returns inf/NaN.
//
// Input: one byte choosing the request type (even: GetKpi, odd:
// QueryRange), then the request in protobuf text format (readable seeds in
// tools/fuzz/corpus/request/).
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "api/request.h"
#include "ingest/decoder.h"
#include "ingest/local_ingest.h"
#include "kpi/catalog.h"
#include "kpistream/events/v1/events.pb.h"
#include "query/query.h"
#include "state/clock.h"
#include "state/store.h"

namespace {

using namespace kpistream;
using google::protobuf::util::TimeUtil;

constexpr int64_t kNow = 1795305600;  // a fixed "now" (2026-11-21)

struct World {
  std::string dir;
  kpi::Catalog catalog;
  kpi::StateIds ids;
  std::unique_ptr<state::Store> store;
  std::unique_ptr<state::FakeClock> clock;
  std::unique_ptr<query::LocalPartialSource> source;
  std::unique_ptr<query::QueryService> query;
};

// A store with a day of campaign events over three channels and regions,
// applied through kpid's own per-record step.
World* MakeWorld() {
  auto* w = new World;
  w->dir = (std::filesystem::temp_directory_path() / ("kpistream-request-fuzz-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(w->dir);
  auto cat = kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml");
  if (!cat.ok()) __builtin_trap();
  w->catalog = std::move(*cat);
  auto store = state::Store::Open({.path = w->dir});
  if (!store.ok()) __builtin_trap();
  w->store = std::move(*store);
  w->ids = *kpi::BindStateIds(w->catalog, w->store.get());
  w->clock = std::make_unique<state::FakeClock>(kNow * 1000);
  ingest::LocalIngest ingest(w->catalog, w->ids, w->store.get(), ingest::ApplierOptions{}, *w->clock);
  const char* channels[] = {"search", "social", "email"};
  const char* regions[] = {"eu", "us", "apac"};
  const events::v1::CampaignEventType types[] = {events::v1::CAMPAIGN_IMPRESSION, events::v1::CAMPAIGN_CLICK,
                                                 events::v1::CAMPAIGN_CONVERSION, events::v1::CAMPAIGN_SPEND};
  for (int i = 0; i < 2000; ++i) {
    events::v1::CampaignEvent e;
    const int64_t t = kNow - 86400 + i * 43;
    e.set_event_id("e" + std::to_string(i));
    e.set_type(types[i % 4]);
    e.mutable_event_time()->set_seconds(t);
    e.set_channel(channels[i % 3]);
    e.set_region(regions[(i / 3) % 3]);
    e.set_campaign_id("c" + std::to_string(i % 7));
    e.set_cost(0.25 * (i % 9));
    e.set_revenue(1.5 * (i % 5));
    if (!ingest.Apply(1, 0, kpi::Family::kCampaign, e.SerializeAsString()).ok()) __builtin_trap();
  }
  if (!ingest.Commit().ok()) __builtin_trap();
  w->source = std::make_unique<query::LocalPartialSource>(*w->store);
  w->query = std::make_unique<query::QueryService>(w->catalog, w->ids, *w->source, *w->clock, query::QueryOptions{});
  static const std::string dir = w->dir;
  std::atexit([] { std::filesystem::remove_all(dir); });
  return w;
}

// A status a client can act on, with a message: NOT_FOUND, INVALID_ARGUMENT,
// RESOURCE_EXHAUSTED (an answer too large) or OUT_OF_RANGE (a sum past the
// exact range).
void CheckClientError(const absl::Status& s) {
  if (s.message().empty()) __builtin_trap();
  if (s.code() != absl::StatusCode::kNotFound && s.code() != absl::StatusCode::kInvalidArgument &&
      s.code() != absl::StatusCode::kResourceExhausted && s.code() != absl::StatusCode::kOutOfRange) {
    __builtin_trap();
  }
}

// What the response carries must be a valid google.protobuf.Timestamp.
void CheckTime(int64_t s) {
  if (s < TimeUtil::kTimestampMinSeconds || s > TimeUtil::kTimestampMaxSeconds) __builtin_trap();
}

void CheckValue(const std::optional<double>& v) {
  if (v && !std::isfinite(*v)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = [] {
    ingest::SilenceProtobufLogging();
    return MakeWorld();
  }();
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(true);
  if (data[0] % 2 == 0) {
    v1::GetKpiRequest req;
    if (!parser.ParseFromString(text, &req)) return -1;  // not a request: not worth keeping
    auto plan = api::PlanGetKpi(req, world->catalog, kNow);
    if (!plan.ok()) {
      CheckClientError(plan.status());
      return 0;
    }
    if (plan->query.start > plan->query.end) __builtin_trap();  // empty: a calendar window at its start
    CheckTime(plan->query.start);
    CheckTime(plan->query.end);
    auto vals = world->query->Get(plan->query);
    if (!vals.ok()) {
      CheckClientError(vals.status());
      return 0;
    }
    for (const auto& v : vals->values) CheckValue(v.value);
  } else {
    v1::QueryRangeRequest req;
    if (!parser.ParseFromString(text, &req)) return -1;
    auto plan = api::PlanQueryRange(req, world->catalog);
    if (!plan.ok()) {
      CheckClientError(plan.status());
      return 0;
    }
    if (plan->step <= 0) __builtin_trap();
    auto series = world->query->Range(plan->query, plan->step);
    if (!series.ok()) {
      CheckClientError(series.status());
      return 0;
    }
    for (const auto& s : series->series) {
      for (const auto& p : s.points) {
        CheckTime(p.time);
        CheckValue(p.value);
      }
    }
  }
  return 0;
}
