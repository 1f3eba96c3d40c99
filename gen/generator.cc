#include "gen/generator.h"

#include "gen/user_shapes.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <limits>
#include <memory>
#include <tuple>
#include <unordered_set>

#include "ingest/router.h"
#include "kpistream/events/v1/events.pb.h"
#include "query/evaluate.h"
#include "query/plan.h"
#include "state/keys.h"

namespace kpistream::gen {

namespace ev = events::v1;
using kpi::Family;

ingest::RejectReason ExpectedReason(BadKind k) {
  switch (k) {
    case BadKind::kGarbage:
    case BadKind::kTruncatedProtobuf:
      return ingest::RejectReason::kNotDecodable;
    case BadKind::kJsonWrongType:
      return ingest::RejectReason::kBadJson;
    case BadKind::kUnknownType:
    case BadKind::kUnknownEnumProto:
      return ingest::RejectReason::kUnknownType;
    case BadKind::kNanValue:
    case BadKind::kInfJson:
    case BadKind::kHugeValue:
      return ingest::RejectReason::kBadValue;
    case BadKind::kTime1970:
    case BadKind::kTime2200:
      return ingest::RejectReason::kBadTimestamp;
    case BadKind::kInvalidUtf8Proto:
      return ingest::RejectReason::kNotDecodable;
    case BadKind::kInvalidUtf8Json:
    case BadKind::kDeepJson:
      return ingest::RejectReason::kBadJson;
    case BadKind::kMissingId:
      return ingest::RejectReason::kMissingField;
    case BadKind::kDuplicate:
      return ingest::RejectReason::kDuplicate;
    case BadKind::kCount_:
      break;
  }
  return ingest::RejectReason::kNotDecodable;
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

  // Journeys started and not yet concluded (their start times), bounded.
  static constexpr size_t kOpenJourneys = 4096;
  std::vector<int64_t> open_leads, open_mqls, open_trials, open_opportunities;

  explicit Rep(const GenOptions& opt) : o(opt), rng(opt.seed) {}

  double Uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53; }
  // Money with cents, so sums are exercised with non-representable decimals.
  double Cents(double lo, double hi) { return std::round(Uniform(lo, hi) * 100) / 100; }
  int Account() { return static_cast<int>(rng() % static_cast<uint64_t>(o.accounts)); }
  // Account a signed up (a % 13) months before the event: cohort 0..12.
  static int CohortMonth(int acct) { return acct % 13; }
  static std::string Cohort(int64_t time_ms, int months_back) {
    const std::time_t t = static_cast<std::time_t>(time_ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    int month = tm.tm_year * 12 + tm.tm_mon - months_back;
    return fmt::format("{:04}-{:02}", 1900 + month / 12, month % 12 + 1);
  }
  // Older cohorts lose some accounts: those stay silent in the product.
  static bool Churned(int acct) { return (acct * 7919) % 100 < CohortMonth(acct) * 3; }

  void Fill(int64_t time_ms, uint64_t i, Record* r) {
    const auto ts = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(time_ms);
    const std::string id = fmt::format("{:x}-{}", o.seed, i);
    const uint64_t fam = rng() % 100;
    const int acct = Account();
    const uint64_t user_n = rng() % static_cast<uint64_t>(o.users_per_account);
    if (fam < 50) {
      FillCampaign(ts, id, acct, user_n, r);
    } else if (fam < 85) {
      FillProduct(ts, id, time_ms, acct, user_n, r);
    } else {
      FillCrm(ts, id, time_ms, acct, user_n, r);
    }
  }

  void FillCampaign(const google::protobuf::Timestamp& ts, const std::string& id, int acct, uint64_t user_n,
                    Record* r) {
    const std::string account = fmt::format("acct-{}", acct);
    const std::string user = fmt::format("user-{}-{}", acct, user_n);
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
    r->family = kpi::Family::kCampaign;
    r->key = e.campaign_id();
    r->event = &e;
    r->type = e.type();
  }

  void FillProduct(const google::protobuf::Timestamp& ts, const std::string& id, int64_t time_ms, int acct0,
                   uint64_t user_n, Record* r) {
    // Churned accounts are silent in the product: their events go to the
    // next active account.
    int acct = acct0;
    while (Churned(acct)) acct = (acct + 1) % o.accounts;
    const std::string account = fmt::format("acct-{}", acct);
    const std::string user = fmt::format("user-{}-{}", acct, user_n);
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
    e.set_cohort_month(CohortMonth(acct));
    e.set_signup_cohort(Cohort(time_ms, CohortMonth(acct)));
    if (type == ev::PRODUCT_FEATURE_USED) {
      // Each account uses its own subset of features (1..7 of them).
      const uint64_t used = 1 + static_cast<uint64_t>(acct) % std::size(kFeatures);
      e.set_feature(kFeatures[rng() % used]);
    }
    if (type == ev::PRODUCT_ADVANCED_ANALYTICS && rng() % 4 == 0) {
      e.set_type(ev::PRODUCT_FIRST_VALUE);
      e.set_duration_seconds(std::round(Uniform(3600, 72 * 3600)));
    }
    if (type == ev::PRODUCT_SESSION_END) e.set_duration_seconds(std::round(Uniform(5, 3600)));
    if (type == ev::PRODUCT_API_CALL) {
      e.set_latency_ms(std::round(Uniform(2, 400) * 10) / 10);
      e.set_status_code(rng() % 50 == 0 ? 500 : 200);
    }
    if (type == ev::PRODUCT_PAGE_LOAD) {
      e.set_latency_ms(std::round(Uniform(300, 6000)));
      e.set_page(fmt::format("/p/{}", rng() % 20));
    }
    r->family = kpi::Family::kProduct;
    r->key = account;
    r->event = &e;
    r->type = e.type();
  }

  void FillCrm(const google::protobuf::Timestamp& ts, const std::string& id, int64_t time_ms, int acct, uint64_t user_n,
               Record* r) {
    const std::string account = fmt::format("acct-{}", acct);
    const std::string user = fmt::format("user-{}-{}", acct, user_n);
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
    e.set_signup_cohort(Cohort(time_ms, CohortMonth(acct)));
    e.set_cohort_month(CohortMonth(acct));
    SetOrigin(type, time_ms, &e);
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
      case ev::CRM_NPS_RESPONSE:  // skewed towards promoters, as in the seeds
        e.set_score(static_cast<double>(rng() % 100 < 55 ? 8 + rng() % 3 : rng() % 11));
        break;
      case ev::CRM_CSAT_RESPONSE:
        e.set_score(static_cast<double>(rng() % 100 < 60 ? 4 + rng() % 2 : 1 + rng() % 5));
        break;
      case ev::CRM_TICKET_FIRST_RESPONSE:
      case ev::CRM_TICKET_RESOLVED:
        e.set_response_minutes(std::round(Uniform(1, 600)));
        break;
      default:
        break;
    }
    r->family = kpi::Family::kCrm;
    r->key = account;
    r->event = &e;
    r->type = e.type();
  }

  // Journeys: a conversion concludes an earlier start (each at most once),
  // and carries the start's time as origin_time.
  void SetOrigin(ev::CrmEventType type, int64_t time_ms, ev::CrmEvent* event) {
    auto& e = *event;
    auto conclude = [&](std::vector<int64_t>* started) {
      if (started->empty()) return time_ms;  // nothing started yet: starts and ends now
      const size_t k = static_cast<size_t>(rng() % started->size());
      const int64_t origin = (*started)[k];
      (*started)[k] = started->back();
      started->pop_back();
      return origin;
    };
    auto remember = [](std::vector<int64_t>* started, int64_t origin) {
      if (started->size() < kOpenJourneys) started->push_back(origin);
    };
    auto set_origin = [&](int64_t origin_ms) {
      *e.mutable_origin_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(origin_ms);
    };
    switch (type) {
      case ev::CRM_LEAD:
        remember(&open_leads, time_ms);
        break;
      case ev::CRM_MQL: {
        const int64_t lead = conclude(&open_leads);
        set_origin(lead);
        remember(&open_mqls, lead);
        break;
      }
      case ev::CRM_SQL:
        set_origin(conclude(&open_mqls));
        break;
      case ev::CRM_TRIAL_STARTED:
        remember(&open_trials, time_ms);
        break;
      case ev::CRM_TRIAL_CONVERTED:
        set_origin(conclude(&open_trials));
        break;
      default:
        break;
    }
    if (type == ev::CRM_OPPORTUNITY_CREATED) remember(&open_opportunities, time_ms);
    if (type == ev::CRM_OPPORTUNITY_WON || type == ev::CRM_OPPORTUNITY_LOST) set_origin(conclude(&open_opportunities));
  }

  void Serialize(Record* r) {
    if (o.format == Format::kAvro) {
      r->payload = ToUserAvro(r->family, *r->event, o.avro_schema_ids[static_cast<int>(r->family)]);
      return;
    }
    if (o.format == Format::kFlatJson || o.format == Format::kNestedJson) {
      r->payload =
          ToUserJson(r->family, *r->event, o.format == Format::kFlatJson ? UserShape::kFlat : UserShape::kNested);
      return;
    }
    bool as_json = o.format == Format::kJson || (o.format == Format::kMixed && (rng() & 1));
    r->payload.clear();
    if (as_json) {
      auto st = google::protobuf::util::MessageToJsonString(*r->event, &r->payload, json);
      (void)st;  // cannot fail for our own messages
    } else {
      r->event->SerializeToString(&r->payload);
    }
  }

  static const google::protobuf::FieldDescriptor* Field(const google::protobuf::Message& m, const char* name) {
    return m.GetDescriptor()->FindFieldByName(name);
  }
  static const char* AmountField(kpi::Family f) {
    return f == kpi::Family::kCampaign ? "cost" : f == kpi::Family::kProduct ? "latency_ms" : "amount";
  }
  static const char* JsonAmountField(kpi::Family f) {
    return f == kpi::Family::kCampaign ? "cost" : f == kpi::Family::kProduct ? "latencyMs" : "amount";
  }
  static const char* AnyType(kpi::Family f) {
    return f == kpi::Family::kCampaign  ? "CAMPAIGN_SPEND"
           : f == kpi::Family::kProduct ? "PRODUCT_PAGE_LOAD"
                                        : "CRM_LEAD";
  }
  // The record's event with one change, as protobuf.
  template <typename Fn>
  static std::string Mutated(const Record& r, Fn change) {
    std::unique_ptr<google::protobuf::Message> m(r.event->New());
    m->CopyFrom(*r.event);
    change(m.get(), m->GetReflection());
    std::string out;
    m->SerializePartialToString(&out);
    return out;
  }

  struct {
    kpi::Family family = kpi::Family::kCampaign;
    std::string key, payload;
    int64_t time_ms = 0;
  } last_good;

  // The hostile JSON kinds: payloads of their own, not mutations of r.
  std::string BadJson(BadKind kind, kpi::Family family) {
    switch (kind) {
      case BadKind::kJsonWrongType:
        return fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"{}","{}":"lots"}})",
                           rng(),
                           family == kpi::Family::kCampaign  ? "CAMPAIGN_SPEND"
                           : family == kpi::Family::kProduct ? "PRODUCT_PAGE_LOAD"
                                                             : "CRM_LEAD",
                           family == kpi::Family::kCampaign  ? "cost"
                           : family == kpi::Family::kProduct ? "latencyMs"
                                                             : "amount");
      case BadKind::kUnknownType:
        return fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"TELEPORT"}})", rng());
      case BadKind::kInfJson:
        return fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"{}","{}":"Infinity"}})",
                           rng(), AnyType(family), JsonAmountField(family));
      case BadKind::kInvalidUtf8Json:
        return fmt::format("{{\"eventId\":\"bad-\xff\xfe\",\"eventTime\":\"2026-01-01T00:00:00Z\",\"type\":\"{}\"}}",
                           AnyType(family));
      case BadKind::kDeepJson:
        return fmt::format(R"({{"eventId":"bad-{}","eventTime":"2026-01-01T00:00:00Z","type":"{}","x":)", rng(),
                           AnyType(family)) +
               std::string(100000, '[') + std::string(100000, ']') + "}";
      default:
        return "";
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
        // Cut the message short, until what is left no longer parses (a cut
        // on a field boundary would still be a valid, shorter message).
        r->event->SerializeToString(&r->payload);
        std::unique_ptr<google::protobuf::Message> probe(r->event->New());
        r->payload.resize(r->payload.size() - 2);
        while (r->payload.size() > 1 && probe->ParseFromString(r->payload)) r->payload.pop_back();
        break;
      }
      case BadKind::kJsonWrongType:
      case BadKind::kUnknownType:
      case BadKind::kInfJson:
      case BadKind::kInvalidUtf8Json:
      case BadKind::kDeepJson:
        r->payload = BadJson(kind, r->family);
        break;
      case BadKind::kNanValue:
        r->payload = Mutated(*r, [&](auto* m, auto* refl) {
          refl->SetDouble(m, Field(*m, AmountField(r->family)), std::numeric_limits<double>::quiet_NaN());
        });
        break;
      case BadKind::kHugeValue:
        r->payload =
            Mutated(*r, [&](auto* m, auto* refl) { refl->SetDouble(m, Field(*m, AmountField(r->family)), 1e300); });
        break;
      case BadKind::kTime1970:
      case BadKind::kTime2200:
        r->payload = Mutated(*r, [&](auto* m, auto* refl) {
          auto* ts = refl->MutableMessage(m, Field(*m, "event_time"));
          ts->GetReflection()->SetInt64(ts, ts->GetDescriptor()->FindFieldByName("seconds"),
                                        kind == BadKind::kTime1970 ? 86400 : 7258118400 + 86400);
        });
        break;
      case BadKind::kInvalidUtf8Proto:
        r->payload =
            Mutated(*r, [&](auto* m, auto* refl) { refl->SetString(m, Field(*m, "event_id"), "bad-\xff\xfe"); });
        break;
      case BadKind::kMissingId:
        r->payload = Mutated(*r, [&](auto* m, auto* refl) { refl->ClearField(m, Field(*m, "event_id")); });
        break;
      case BadKind::kUnknownEnumProto:
        r->payload = Mutated(*r, [&](auto* m, auto* refl) { refl->SetEnumValue(m, Field(*m, "type"), 999); });
        break;
      case BadKind::kDuplicate:
        // Same key, so the same partition as the original, as a producer's
        // retry of an acknowledged-but-unconfirmed send would be.
        r->family = last_good.family;
        r->key = last_good.key;
        r->payload = last_good.payload;
        r->time_ms = last_good.time_ms;
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
  if (o.bad_every > 0) {  // the next kDuplicate repeats it
    rep_->last_good.family = out->family;
    rep_->last_good.key = out->key;
    rep_->last_good.payload = out->payload;
    rep_->last_good.time_ms = out->time_ms;
  }
}

namespace {

// Exact aggregate of one (range, measure, group).
struct Exact {
  state::Agg agg;
  state::Last last;
  std::unordered_set<uint64_t> distinct;
  std::vector<double> values;
  void Merge(const Exact& o) {
    agg.Merge(o.agg);
    last.Merge(o.last);
    distinct.insert(o.distinct.begin(), o.distinct.end());
    values.insert(values.end(), o.values.begin(), o.values.end());
  }
  std::optional<double> Value(const kpi::MeasureDef& m, double q) const {
    switch (m.aggregation) {
      case kpi::Aggregation::kDistinct:
        return static_cast<double>(distinct.size());
      case kpi::Aggregation::kQuantile: {
        if (values.empty()) return std::nullopt;
        auto v = values;
        const size_t k = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
        return v[k];
      }
      case kpi::Aggregation::kLast:
        if (last.empty()) return std::nullopt;
        return last.value;
      default: {
        state::Partial p;
        p.agg = agg;
        return query::MeasureValue(m, &p, q);
      }
    }
  }
};

// A measure's bucket-aligned range (the same alignment kpid's queries use).
struct Span {
  int measure;
  int64_t start, end;
  bool operator<(const Span& o) const { return std::tie(measure, start, end) < std::tie(o.measure, o.start, o.end); }
};

}  // namespace

struct Truth::Rep {
  const kpi::Catalog& catalog;
  ingest::Router router;
  int64_t end_s;
  std::vector<std::string> windows;
  std::map<Span, std::map<std::string, Exact>> spans;  // span -> group key -> exact
  std::vector<std::vector<const Span*>> spans_by_measure;
  ingest::RoutedEvent routed;
  std::string key;
  uint64_t records = 0, good = 0;
  std::map<std::string, uint64_t> rejected;
  int64_t min_ms = INT64_MAX, max_ms = INT64_MIN;

  Rep(const kpi::Catalog& c, int64_t end, std::vector<std::string> w)
      : catalog(c), router(c), end_s(end), windows(std::move(w)), spans_by_measure(c.measures.size()) {
    for (const auto& k : catalog.kpis) {
      for (const auto& w : windows) {
        for (size_t i = 0; i < k.inputs.size(); ++i) {
          if (auto s = SpanOf(k, i, w)) spans[*s];
        }
      }
    }
    for (const auto& [s, unused] : spans) spans_by_measure[static_cast<size_t>(s.measure)].push_back(&s);
  }

  // The buckets kpid reads for an input over a window ending at end_s: the
  // query layer's own plan, so both align windows the same way (data is
  // taken to end at end_s; windows in tests end on bucket boundaries).
  std::optional<Span> SpanOf(const kpi::KpiDef& k, size_t input, const std::string& window) const {
    auto r = kpi::ResolveWindow(window, end_s, catalog.timezone);
    if (!r.ok()) return std::nullopt;
    const kpi::StateIds ids{.measures = std::vector<uint32_t>(catalog.measures.size(), 0), .dimensions = {}};
    auto plan = query::PlanQuery(catalog, ids, {.kpi = k.name, .start = r->start, .end = r->end},
                                 {.data_end = end_s, .now = end_s, .retention = {}}, /*allow_empty_window=*/true);
    if (!plan.ok()) return std::nullopt;
    const auto& in = plan->inputs[input];
    return Span{in.measure, in.coverage.scan_begin, in.coverage.scan_end};
  }
};

Truth::Truth(const kpi::Catalog& catalog, int64_t end_s, std::vector<std::string> windows)
    : rep_(std::make_unique<Rep>(catalog, end_s, std::move(windows))) {}
Truth::~Truth() = default;

void Truth::Add(const Record& r) {
  ++rep_->records;
  if (r.bad) {
    ++rep_->rejected[std::string(ingest::RejectReasonName(ExpectedReason(r.bad_kind)))];
    return;
  }
  ++rep_->good;
  rep_->min_ms = std::min(rep_->min_ms, r.time_ms);
  rep_->max_ms = std::max(rep_->max_ms, r.time_ms);
  kpi::EventView v{r.family, r.type, r.time_ms, r.event};
  rep_->router.Route(v, &rep_->routed);
  for (const auto& c : rep_->routed.contributions) {
    const int64_t t = kpi::FloorDiv(c.time_ms, 1000);
    const auto& m = rep_->catalog.measures[static_cast<size_t>(c.measure)];
    rep_->key.clear();
    for (int d : m.group_dims) state::AppendGroupValue(&rep_->key, rep_->routed.dim_values[static_cast<size_t>(d)]);
    for (const Span* s : rep_->spans_by_measure[static_cast<size_t>(c.measure)]) {
      if (t < s->start || t >= s->end) continue;
      auto& e = rep_->spans[*s][rep_->key];
      switch (rep_->catalog.measures[static_cast<size_t>(c.measure)].aggregation) {
        case kpi::Aggregation::kDistinct:
          e.distinct.insert(c.hash);
          break;
        case kpi::Aggregation::kQuantile:
          e.values.push_back(c.value);
          break;
        case kpi::Aggregation::kLast:
          e.last.Add(c.time_ms, c.value);
          break;
        default:
          e.agg.Add(c.value, state::ToMicros(c.value));
      }
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
  for (const auto& k : rep_->catalog.kpis) {
    bool approx = false;
    for (const auto& in : k.inputs) {
      const auto a = rep_->catalog.measures[static_cast<size_t>(in.measure)].aggregation;
      approx |= a == kpi::Aggregation::kDistinct || a == kpi::Aggregation::kQuantile;
    }
    for (const auto& w : rep_->windows) {
      auto value = [&](int input, double q) -> std::optional<double> {
        const auto& in = k.inputs[static_cast<size_t>(input)];
        const auto& m = rep_->catalog.measures[static_cast<size_t>(in.measure)];
        const auto span = rep_->SpanOf(k, static_cast<size_t>(input), w);
        if (!span) return std::nullopt;
        const auto& groups = rep_->spans.at(*span);
        if (in.group_dim.empty()) {
          Exact all;
          for (const auto& [g, e] : groups) all.Merge(e);
          return all.Value(m, q);
        }
        size_t dim = 0;
        while (m.group_by[dim] != in.group_dim) ++dim;
        std::map<std::string, Exact> by_dim;
        std::vector<std::string_view> vals;
        for (const auto& [g, e] : groups) {
          state::SplitGroupKey(g, &vals);
          by_dim[std::string(vals[dim])].Merge(e);
        }
        int64_t n = 0;
        for (const auto& [d, e] : by_dim) {
          const auto v = e.Value(m, 0.5);
          if (v && *v >= in.threshold) ++n;
        }
        return static_cast<double>(n);
      };
      out +=
          fmt::format("kpi {} {} {} {}\n", k.name, w, fmt_val(kpi::Eval(k.expr, value)), approx ? "approx" : "exact");
    }
  }
  return out;
}

}  // namespace kpistream::gen
