// libFuzzer target: a declared source's JSON decoder (ingest/source_mapping.h)
// must never crash, hang or leak on any payload, under mappings that use
// every conversion: nested paths, scales, defaults, constants, 32-bit
// integers, times as epoch numbers, RFC 3339 and a custom format, and the
// record timestamp.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ingest/decoder.h"
#include "ingest/source_mapping.h"

namespace {

using kpistream::ingest::SourceMapping;
using kpistream::ingest::SourceSpec;

std::shared_ptr<const SourceMapping> Make(int which) {
  SourceSpec s;
  s.topic = "fuzz";
  switch (which) {
    case 0:  // flat campaign, epoch ms, the payload names the type
      s.family = kpistream::kpi::Family::kCampaign;
      s.event_id_field = "id";
      s.event_time = {.field = "ts", .unit = "ms"};
      s.type_field = "kind";
      s.fields["cost"] = {.field = "cost_micros", .scale = 1e-6};
      s.fields["channel"] = {.field = "meta.channel", .fallback = "unknown"};
      s.fields["region"] = {.constant = "emea"};
      break;
    case 1:  // nested product, RFC 3339, mapped type values, int32
      s.family = kpistream::kpi::Family::kProduct;
      s.event_time = {.field = "timestamp"};
      s.type_field = "event";
      s.type_values = {{"API Request", "api_call"}, {"Login", "login"}};
      s.fields["user_id"] = {.field = "context.user.id", .required = true};
      s.fields["status_code"] = {.field = "properties.status"};
      s.fields["latency_ms"] = {.field = "properties.latency", .scale = 1000};
      break;
    default:  // crm, custom time format, record timestamp as origin
      s.family = kpistream::kpi::Family::kCrm;
      s.event_id_field = "deal.id";
      s.event_time = {.field = "closed", .format = "%Y-%m-%d %H:%M:%S"};
      s.type_constant = "opportunity_won";
      s.fields["origin_time"].time = {.record_timestamp = true};
      s.fields["amount"] = {.field = "deal.amount", .required = true};
      s.fields["cohort_month"] = {.field = "deal.month"};
      break;
  }
  auto m = SourceMapping::Compile(s);
  if (!m.ok()) __builtin_trap();
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const SourceMapping> mappings[] = {Make(0), Make(1), Make(2)};
  static kpistream::ingest::Decoder decoder;
  if (size == 0) return 0;
  const auto& mapping = *mappings[data[0] % 3];
  kpistream::kpi::EventView ev;
  kpistream::ingest::DecodeError err;
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  if (decoder.DecodeMapped(mapping, payload,
                           {.topic = "fuzz", .partition = 1, .offset = 2, .timestamp_ms = 1764460800000}, &ev, &err)) {
    if (ev.msg == nullptr || ev.type == 0 || ev.event_id.empty() || ev.family != mapping.family()) __builtin_trap();
  } else if (err.detail.empty()) {
    __builtin_trap();  // every rejection says why
  }
  return 0;
}
