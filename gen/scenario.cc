#include "gen/scenario.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::gen {

namespace {

using events::v1::CrmEvent;
using events::v1::ProductEvent;

constexpr int64_t kDay = 86400;

struct Scripted {
  int64_t time_s;
  bool crm;  // else a product page view
  int type;
  int account;
};

std::vector<Scripted> ChurnSpike() {
  std::vector<Scripted> s;
  for (int i = 0; i < 1000; ++i) s.push_back({i * 60, true, events::v1::CRM_SUBSCRIPTION_STARTED, i});
  int next_cancel = 999;
  for (int64_t d = 1; d < 80; d += 3)
    s.push_back({d * kDay + 3600, true, events::v1::CRM_SUBSCRIPTION_CANCELLED, next_cancel--});
  for (int j = 0; j < 40; ++j) {
    s.push_back({45 * kDay + j * 1800, true, events::v1::CRM_SUBSCRIPTION_CANCELLED, next_cancel--});
  }
  for (int64_t h = 0; h < 80 * 24; ++h) s.push_back({h * 3600 + 1800, false, events::v1::PRODUCT_PAGE_LOAD, 0});
  std::stable_sort(s.begin(), s.end(), [](const Scripted& a, const Scripted& b) { return a.time_s < b.time_s; });
  return s;
}

}  // namespace

absl::Status EmitScenario(std::string_view name, int64_t start_s, double from_day, double to_day,
                          const std::function<void(const Record&)>& emit) {
  if (name != "churn-spike") {
    return absl::InvalidArgumentError(fmt::format("unknown scenario '{}' (known: churn-spike)", name));
  }
  const int64_t from = start_s + static_cast<int64_t>(from_day * kDay);
  const int64_t to = start_s + static_cast<int64_t>(to_day * kDay);
  CrmEvent crm;
  ProductEvent product;
  Record r;
  uint64_t n = 0;
  for (const auto& e : ChurnSpike()) {
    ++n;
    const int64_t t = start_s + e.time_s;
    if (t < from || t >= to) continue;
    const std::string account = fmt::format("acct-{:04d}", e.account);
    r.time_ms = t * 1000;
    r.key = account;
    r.type = e.type;
    if (e.crm) {
      crm.Clear();
      crm.set_event_id(fmt::format("churn-spike-{}", n));
      crm.mutable_event_time()->set_seconds(t);
      crm.set_type(static_cast<events::v1::CrmEventType>(e.type));
      crm.set_account_id(account);
      crm.set_segment("smb");
      crm.set_plan("pro");
      crm.set_region("eu");
      crm.set_mrr_delta(e.type == events::v1::CRM_SUBSCRIPTION_STARTED ? 100 : -100);
      r.family = kpi::Family::kCrm;
      r.payload = crm.SerializeAsString();
      r.event = &crm;
    } else {
      product.Clear();
      product.set_event_id(fmt::format("churn-spike-{}", n));
      product.mutable_event_time()->set_seconds(t);
      product.set_type(static_cast<events::v1::ProductEventType>(e.type));
      product.set_account_id("acct-0000");
      product.set_user_id("user-0");
      product.set_plan("pro");
      product.set_region("eu");
      product.set_latency_ms(800);
      r.family = kpi::Family::kProduct;
      r.payload = product.SerializeAsString();
      r.event = &product;
    }
    emit(r);
  }
  return absl::OkStatus();
}

}  // namespace kpistream::gen
