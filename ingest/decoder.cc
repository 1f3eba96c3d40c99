#include "ingest/decoder.h"

#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>

#include "kpistream/events/v1/events.pb.h"
#include "state/aggregate.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

struct Decoder::Rep {
  DecoderOptions options;
  events::v1::CampaignEvent campaign;
  events::v1::ProductEvent product;
  events::v1::CrmEvent crm;
  pb::util::JsonParseOptions json_options;

  pb::Message* MessageFor(kpi::Family f) {
    switch (f) {
      case kpi::Family::kCampaign:
        return &campaign;
      case kpi::Family::kProduct:
        return &product;
      case kpi::Family::kCrm:
        return &crm;
    }
    return nullptr;
  }
};

Decoder::Decoder(DecoderOptions options) : rep_(std::make_unique<Rep>()) {
  rep_->options = options;
  // Forward compatibility: fields added by a newer producer are ignored, and
  // an enum name this schema does not know decodes as UNSPECIFIED, which is
  // then rejected as unknown_type below.
  rep_->json_options.ignore_unknown_fields = true;
}
Decoder::~Decoder() = default;

std::string_view RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kNotDecodable:
      return "not_decodable";
    case RejectReason::kBadJson:
      return "bad_json";
    case RejectReason::kUnknownType:
      return "unknown_type";
    case RejectReason::kMissingField:
      return "missing_field";
    case RejectReason::kBadTimestamp:
      return "bad_timestamp";
    case RejectReason::kBadValue:
      return "bad_value";
    case RejectReason::kOversized:
      return "oversized";
    case RejectReason::kDuplicate:
      return "duplicate";
    case RejectReason::kLate:
      return "late";
    case RejectReason::kEmpty:
      return "empty";
    case RejectReason::kFuture:
      return "future";
    case RejectReason::kCount_:
      break;
  }
  return "unknown";
}

namespace {

// Events are flat; a deeper document is hostile. Rejected before parsing:
// protobuf's JSON parser is recursive, and a document nested 100 000 levels
// deep (in an unknown field it would otherwise skip) is a stack-depth
// attack on any recursive parser. Linear, brackets inside strings ignored.
constexpr int kMaxJsonDepth = 64;
int JsonDepth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonDepth) return max_depth;  // no need to read on
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

bool IsJson(std::string_view payload) {
  for (char c : payload) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{';
  }
  return false;
}

// Checks every numeric field of the message: finite and within the range the
// fixed-point sums can hold.
bool CheckValues(const pb::Message& msg, std::string* bad_field) {
  const auto* d = msg.GetDescriptor();
  const auto* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_DOUBLE) continue;
    const double v = r->GetDouble(msg, f);
    if (!std::isfinite(v) || std::fabs(v) > state::kMaxAbsValue) {
      *bad_field = fmt::format("{}={}", f->name(), v);
      return false;
    }
  }
  return true;
}

}  // namespace

bool Decoder::Decode(kpi::Family family, std::string_view payload, PayloadFormat format, kpi::EventView* out,
                     DecodeError* err) {
  if (payload.empty()) {
    *err = {RejectReason::kEmpty, "the record has no payload (an empty value or a tombstone)"};
    return false;
  }
  if (payload.size() > rep_->options.max_payload_bytes) {
    *err = {RejectReason::kOversized,
            fmt::format("payload is {} bytes, the maximum is {}", payload.size(), rep_->options.max_payload_bytes)};
    return false;
  }
  pb::Message* msg = rep_->MessageFor(family);
  msg->Clear();
  const bool json = format == PayloadFormat::kJson || (format == PayloadFormat::kAuto && IsJson(payload));
  if (json) {
    if (const int depth = JsonDepth(payload); depth > kMaxJsonDepth) {
      *err = {RejectReason::kBadJson,
              fmt::format("JSON nested {} levels deep, the maximum is {}", depth, kMaxJsonDepth)};
      return false;
    }
    auto st = pb::util::JsonStringToMessage(pb::StringPiece(payload.data(), payload.size()), msg, rep_->json_options);
    if (!st.ok()) {
      // protobuf's JSON parser reports a timestamp it cannot read as
      // "Invalid google.protobuf.Timestamp value ..." (or a type error on
      // the Timestamp field): that is a bad timestamp, not bad JSON.
      const std::string message(st.message());
      const bool time = message.find("google.protobuf.Timestamp") != std::string::npos;
      *err = {time ? RejectReason::kBadTimestamp : RejectReason::kBadJson, message};
      return false;
    }
  } else if (!msg->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    *err = {RejectReason::kNotDecodable,
            fmt::format("not a valid {} protobuf message ({} bytes)", msg->GetTypeName(), payload.size())};
    return false;
  }

  const auto* d = msg->GetDescriptor();
  const auto* r = msg->GetReflection();
  const auto* type_f = d->FindFieldByNumber(3);
  const int type = r->GetEnumValue(*msg, type_f);
  if (type == 0 || type_f->enum_type()->FindValueByNumber(type) == nullptr) {
    *err = {RejectReason::kUnknownType,
            fmt::format("event type {} is not a known {} type", type, type_f->enum_type()->name())};
    return false;
  }
  const auto* id_f = d->FindFieldByNumber(1);
  const auto* time_f = d->FindFieldByNumber(2);
  const std::string& event_id = r->GetStringReference(*msg, id_f, nullptr);
  if (event_id.empty()) {
    *err = {RejectReason::kMissingField, "event_id is missing"};
    return false;
  }
  if (!r->HasField(*msg, time_f)) {
    *err = {RejectReason::kMissingField, "event_time is missing"};
    return false;
  }
  const auto& ts = static_cast<const pb::Timestamp&>(r->GetMessage(*msg, time_f));
  if (ts.seconds() < rep_->options.min_time_ms / 1000 || ts.seconds() >= rep_->options.max_time_ms / 1000 ||
      ts.nanos() < 0 || ts.nanos() > 999999999) {
    *err = {RejectReason::kBadTimestamp, fmt::format("event_time {}s is outside the accepted range", ts.seconds())};
    return false;
  }
  std::string bad;
  if (!CheckValues(*msg, &bad)) {
    *err = {RejectReason::kBadValue, fmt::format("numeric value out of range: {}", bad)};
    return false;
  }
  out->family = family;
  out->type = type;
  out->time_ms = ts.seconds() * 1000 + ts.nanos() / 1000000;
  out->msg = msg;
  out->event_id = event_id;
  return true;
}

void SilenceProtobufLogging() {
  pb::SetLogHandler([](pb::LogLevel, const char*, int, const std::string&) {});
}

}  // namespace kpistream::ingest
