#include "tools/kpigen/generator.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <chrono>

#include "kpistream/events/v1/events.pb.h"
#include "pipeline/query.h"
#include "pipeline/router.h"

namespace kpistream::gen {

namespace ev = events::v1;
using pipeline::Family;

pipeline::RejectReason ExpectedReason(BadKind k) {
  switch (k) {
    case BadKind::kGarbage:
    case BadKind::kTruncatedProtobuf:
      return pipeline::RejectReason::kNotDecodable;
    case BadKind::kJsonWrongType:
      return pipeline::RejectReason::kBadJson;
    case BadKind::kUnknownType:
      return pipeline::RejectReason::kUnknownType;
    case BadKind::kCount_:
      break;
  }
  return pipeline::RejectReason::kNotDecodable;
}

namespace {
constexpr const char* kChannels[] = {"search", "social", "display", "email", "video", "affiliate"};
constexpr const char* kRegions[] = {"na", "eu", "apac", "latam"};
constexpr const char* kPlans[] = {"free", "starter", "pro", "enterprise"};
constexpr const char* kSegments[] = {"smb", "mid_market", "enterprise"};
constexpr const char* kFeatures[] = {"dashboards", "alerts", "sql_editor", "connectors",
                                     "sharing",    "api",    "ml_insights"};
constexpr const char* kSources[] = {"organic", "paid", "referral", "partner", "outbound"};
constexpr const char* kAudiences[] = {"retargeting", "lookalike", "broad", "in_market"};
template <typename T, size_t N>
const T& Pick(std::mt19937_64& rng, const T (&arr)[N]) {
  return arr[rng() % N];
}
}  // namespace

struct Generator::Rep {
  GenOptions o;
  std::mt19937_64 rng;
  ev::CampaignEvent campaign;
  ev::ProductEvent product;
  ev::CrmEvent crm;
  google::protobuf::util::JsonPrintOptions json;

  explicit Rep(const GenOptions& opt) : o(opt), rng(opt.seed) {}

  double Uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53; }
  // Money with cents, so sums are exercised with non-representable decimals.
  double Cents(double lo, double hi) { return std::round(Uniform(lo, hi) * 100) / 100; }
  int Account() { return static_cast<int>(rng() % static_cast<uint64_t>(o.accounts)); }

  void Fill(int64_t time_ms, uint64_t i, Record* r) {
    const auto ts = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(time_ms);
    const std::string id = fmt::format("{:x}-{}", o.seed, i);
    const uint64_t fam = rng() % 100;
    const int acct = Account();
    const std::string account = fmt::format("acct-{}", acct);
    const std::string user = fmt::format("user-{}-{}", acct, rng() % static_cast<uint64_t>(o.users_per_account));
    if (fam < 50) {
      auto& e = campaign;
      e.Clear();
      e.set_event_id(id);
      *e.mutable_event_time() = ts;
      const uint64_t t = rng() % 1000;
      e.set_type(t < 720   ? ev::CAMPAIGN_IMPRESSION
                 : t < 860 ? ev::CAMPAIGN_SPEND
                 : t < 975 ? ev::CAMPAIGN_CLICK
                 : t < 990 ? ev::CAMPAIGN_CONVERSION
                           : ev::CAMPAIGN_LEAD);
      const int camp = static_cast<int>(rng() % static_cast<uint64_t>(o.campaigns));
      e.set_campaign_id(fmt::format("cmp-{}", camp));
      e.set_channel(kChannels[camp % std::size(kChannels)]);
      e.set_creative(fmt::format("cr-{}-{}", camp, rng() % 4));
      e.set_audience(Pick(rng, kAudiences));
      e.set_region(Pick(rng, kRegions));
      e.set_user_id(user);
      e.set_account_id(account);
      if (e.type() == ev::CAMPAIGN_CONVERSION) e.set_revenue(Cents(20, 900));
      if (e.type() == ev::CAMPAIGN_SPEND) e.set_cost(Cents(0.05, 40));
      r->family = Family::kCampaign;
      r->key = e.campaign_id();
      r->event = &e;
      r->type = e.type();
    } else if (fam < 85) {
      auto& e = product;
      e.Clear();
      e.set_event_id(id);
      *e.mutable_event_time() = ts;
      const uint64_t t = rng() % 1000;
      ev::ProductEventType type = t < 100   ? ev::PRODUCT_SESSION_START
                                  : t < 190 ? ev::PRODUCT_SESSION_END
                                  : t < 260 ? ev::PRODUCT_LOGIN
                                  : t < 480 ? ev::PRODUCT_FEATURE_USED
                                  : t < 510 ? ev::PRODUCT_DASHBOARD_CREATED
                                  : t < 525 ? ev::PRODUCT_DATA_SOURCE_CONNECTED
                                  : t < 565 ? ev::PRODUCT_REPORT_GENERATED
                                  : t < 760 ? ev::PRODUCT_API_CALL
                                  : t < 950 ? ev::PRODUCT_PAGE_LOAD
                                  : t < 970 ? ev::PRODUCT_ERROR
                                  : t < 985 ? ev::PRODUCT_TEAM_INVITE
                                            : ev::PRODUCT_ADVANCED_ANALYTICS;
      e.set_type(type);
      e.set_account_id(account);
      e.set_user_id(user);
      e.set_session_id(fmt::format("s-{}-{}", user, rng() % 8));
      e.set_plan(kPlans[static_cast<size_t>(acct) % std::size(kPlans)]);
      e.set_region(kRegions[static_cast<size_t>(acct) % std::size(kRegions)]);
      if (type == ev::PRODUCT_FEATURE_USED) e.set_feature(Pick(rng, kFeatures));
      if (type == ev::PRODUCT_SESSION_END) e.set_duration_seconds(std::round(Uniform(5, 3600)));
      if (type == ev::PRODUCT_API_CALL) {
        e.set_latency_ms(std::round(Uniform(2, 400) * 10) / 10);
        e.set_status_code(rng() % 50 == 0 ? 500 : 200);
      }
      if (type == ev::PRODUCT_PAGE_LOAD) {
        e.set_latency_ms(std::round(Uniform(300, 6000)));
        e.set_page(fmt::format("/p/{}", rng() % 20));
      }
      r->family = Family::kProduct;
      r->key = account;
      r->event = &e;
      r->type = e.type();
    } else {
      auto& e = crm;
      e.Clear();
      e.set_event_id(id);
      *e.mutable_event_time() = ts;
      const uint64_t t = rng() % 1000;
      ev::CrmEventType type = t < 150   ? ev::CRM_LEAD
                              : t < 230 ? ev::CRM_MQL
                              : t < 280 ? ev::CRM_SQL
                              : t < 380 ? ev::CRM_TRIAL_STARTED
                              : t < 410 ? ev::CRM_TRIAL_CONVERTED
                              : t < 450 ? ev::CRM_OPPORTUNITY_CREATED
                              : t < 470 ? ev::CRM_OPPORTUNITY_WON
                              : t < 500 ? ev::CRM_OPPORTUNITY_LOST
                              : t < 540 ? ev::CRM_SUBSCRIPTION_STARTED
                              : t < 570 ? ev::CRM_SUBSCRIPTION_EXPANDED
                              : t < 585 ? ev::CRM_SUBSCRIPTION_CONTRACTED
                              : t < 600 ? ev::CRM_SUBSCRIPTION_CANCELLED
                              : t < 680 ? ev::CRM_NPS_RESPONSE
                              : t < 740 ? ev::CRM_CSAT_RESPONSE
                              : t < 860 ? ev::CRM_TICKET_OPENED
                              : t < 930 ? ev::CRM_TICKET_FIRST_RESPONSE
                                        : ev::CRM_TICKET_RESOLVED;
      e.set_type(type);
      e.set_account_id(account);
      e.set_user_id(user);
      e.set_segment(kSegments[static_cast<size_t>(acct) % std::size(kSegments)]);
      e.set_plan(kPlans[static_cast<size_t>(acct) % std::size(kPlans)]);
      e.set_region(kRegions[static_cast<size_t>(acct) % std::size(kRegions)]);
      e.set_sales_rep(fmt::format("rep-{}", acct % 9));
      e.set_source(Pick(rng, kSources));
      e.set_signup_cohort(fmt::format("2026-{:02}", 1 + acct % 12));
      switch (type) {
        case ev::CRM_OPPORTUNITY_CREATED:
        case ev::CRM_OPPORTUNITY_WON:
        case ev::CRM_OPPORTUNITY_LOST:
          e.set_opportunity_id(fmt::format("opp-{}", rng() % 100000));
          e.set_amount(Cents(1000, 90000));
          if (type != ev::CRM_OPPORTUNITY_CREATED) e.set_cycle_days(std::round(Uniform(7, 180)));
          break;
        case ev::CRM_SUBSCRIPTION_STARTED:
        case ev::CRM_SUBSCRIPTION_EXPANDED:
          e.set_mrr_delta(Cents(49, 4000));
          break;
        case ev::CRM_SUBSCRIPTION_CONTRACTED:
        case ev::CRM_SUBSCRIPTION_CANCELLED:
          e.set_mrr_delta(-Cents(49, 2000));
          break;
        case ev::CRM_NPS_RESPONSE:
          e.set_score(static_cast<double>(rng() % 11));
          break;
        case ev::CRM_CSAT_RESPONSE:
          e.set_score(static_cast<double>(1 + rng() % 5));
          break;
        case ev::CRM_TICKET_FIRST_RESPONSE:
        case ev::CRM_TICKET_RESOLVED:
          e.set_response_minutes(std::round(Uniform(1, 600)));
          break;
        default:
          break;
      }
      r->family = Family::kCrm;
      r->key = account;
      r->event = &e;
      r->type = e.type();
    }
  }

  void Serialize(Record* r) {
    bool as_json = o.format == Format::kJson || (o.format == Format::kMixed && (rng() & 1));
    r->payload.clear();
    if (as_json) {
      auto st = google::protobuf::util::MessageToJsonString(*r->event, &r->payload, json);
      (void)st;  // cannot fail for our own messages
    } else {
      r->event->SerializeToString(&r->payload);
    }
  }

  void MakeBad(BadKind kind, Record* r) {
    r->bad = true;
    r->bad_kind = kind;
    switch (kind) {
      case BadKind::kGarbage:
        // An over-long varint tag: never valid protobuf, not JSON.
        r->payload.assign(11, '\xff');
        for (int i = 0; i < 8; ++i) r->payload.push_back(static_cast<char>(rng() & 0x7f));
        break;
      case BadKind::kTruncatedProtobuf: {
        // Cut inside the last length-delimited field (region / plan).
        r->event->SerializeToString(&r->payload);
        r->payload.resize(r->payload.size() - 2);
        break;
      }
      case BadKind::kJsonWrongType:
        r->payload =
            fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"{}","{}":"lots"}})", rng(),
                        r->family == Family::kCampaign  ? "CAMPAIGN_SPEND"
                        : r->family == Family::kProduct ? "PRODUCT_PAGE_LOAD"
                                                        : "CRM_LEAD",
                        r->family == Family::kCampaign  ? "cost"
                        : r->family == Family::kProduct ? "latencyMs"
                                                        : "amount");
        break;
      case BadKind::kUnknownType:
        r->payload =
            fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"TELEPORT"}})", rng());
        break;
      case BadKind::kCount_:
        break;
    }
    r->event = nullptr;
  }
};

Generator::Generator(GenOptions options) : rep_(std::make_unique<Rep>(options)) {}
Generator::~Generator() = default;

void Generator::Next(Record* out) {
  auto& o = rep_->o;
  const uint64_t i = index_++;
  int64_t t;
  if (o.live) {
    t = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
  } else {
    const int64_t step = o.count > 0 ? o.span_ms / static_cast<int64_t>(o.count) : 1;
    const int64_t jitter = step > 1 ? static_cast<int64_t>(rep_->rng() % static_cast<uint64_t>(step)) : 0;
    t = o.start_ms + static_cast<int64_t>(i) * step + jitter;
  }
  out->bad = false;
  out->time_ms = t;
  rep_->Fill(t, i, out);
  if (o.bad_every > 0 && i % o.bad_every == o.bad_every - 1) {
    const auto kind = static_cast<BadKind>((i / o.bad_every) % static_cast<uint64_t>(BadKind::kCount_));
    rep_->MakeBad(kind, out);
    return;
  }
  rep_->Serialize(out);
}

struct Truth::Rep {
  const pipeline::Catalog& catalog;
  pipeline::Router router;
  std::vector<std::optional<state::Partial>> partials;
  std::string scratch;
  std::vector<pipeline::Contribution> contribs;
  uint64_t records = 0, good = 0;
  std::map<std::string, uint64_t> rejected;
  int64_t min_ms = INT64_MAX, max_ms = INT64_MIN;
  explicit Rep(const pipeline::Catalog& c) : catalog(c), router(c), partials(c.measures.size()) {}
};

Truth::Truth(const pipeline::Catalog& catalog) : rep_(std::make_unique<Rep>(catalog)) {}
Truth::~Truth() = default;

void Truth::Add(const Record& r) {
  ++rep_->records;
  if (r.bad) {
    ++rep_->rejected[std::string(pipeline::RejectReasonName(ExpectedReason(r.bad_kind)))];
    return;
  }
  ++rep_->good;
  rep_->min_ms = std::min(rep_->min_ms, r.time_ms);
  rep_->max_ms = std::max(rep_->max_ms, r.time_ms);
  pipeline::EventView v{r.family, r.type, r.time_ms, r.event};
  rep_->router.Route(v, &rep_->scratch, &rep_->contribs);
  for (const auto& c : rep_->contribs) {
    auto& p = rep_->partials[c.measure];
    if (!p) p.emplace(pipeline::PartialKind(rep_->catalog.measures[c.measure].aggregation));
    switch (p->kind) {
      case state::ValueKind::kAgg:
        p->agg.Add(c.value, state::ToMicros(c.value));
        break;
      case state::ValueKind::kHll:
        p->hll->AddHash(c.hash);
        break;
      case state::ValueKind::kSketch:
        p->sketch->Add(c.value);
        break;
      case state::ValueKind::kLast:
        p->last.Add(r.time_ms, c.value);
        break;
    }
  }
}

std::string Truth::Render() const {
  auto fmt_val = [](std::optional<double> v) { return v ? fmt::format("{:.17g}", *v) : std::string("none"); };
  std::string out;
  out += fmt::format("window_start {}\n", rep_->good ? rep_->min_ms / 1000 : 0);
  out += fmt::format("window_end {}\n", rep_->good ? rep_->max_ms / 1000 + 1 : 0);
  out += fmt::format("records {}\ngood {}\n", rep_->records, rep_->good);
  for (const auto& [reason, n] : rep_->rejected) out += fmt::format("rejected {} {}\n", reason, n);
  auto value = [&](int i, double q) {
    const auto& p = rep_->partials[static_cast<size_t>(i)];
    return pipeline::MeasureValue(rep_->catalog.measures[static_cast<size_t>(i)], p ? &*p : nullptr, q);
  };
  for (size_t i = 0; i < rep_->catalog.measures.size(); ++i) {
    const auto& m = rep_->catalog.measures[i];
    const double q = m.aggregation == pipeline::Aggregation::kQuantile ? 0.5 : -1;
    out += fmt::format("measure {} {} {}\n", m.name, pipeline::AggregationName(m.aggregation),
                       fmt_val(value(static_cast<int>(i), q)));
  }
  for (const auto& k : rep_->catalog.kpis) {
    out += fmt::format("kpi {} {}\n", k.name, fmt_val(pipeline::Eval(k.expr, value)));
  }
  return out;
}

}  // namespace kpistream::gen
