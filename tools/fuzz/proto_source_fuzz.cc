// libFuzzer target: a declared source of the user's own protobuf schema
// (ingest/proto_layout.h) must never crash, hang or leak on any payload,
// and Confluent's framing (schema id, message indexes) must split any
// bytes safely.
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ingest/decoder.h"
#include "ingest/proto_layout.h"
#include "ingest/schema_registry.h"
#include "ingest/source_mapping.h"

namespace {

namespace pb = google::protobuf;
using kpistream::ingest::SourceMapping;
using kpistream::ingest::SourceSpec;

constexpr char kProto[] = R"pb(
  name: "crm/deal.proto"
  package: "crm.v1"
  dependency: "google/protobuf/timestamp.proto"
  syntax: "proto3"
  message_type {
    name: "Deal"
    field { name: "id" number: 1 type: TYPE_UINT64 label: LABEL_OPTIONAL }
    field { name: "closed" number: 2 type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp" label: LABEL_OPTIONAL }
    field { name: "stage" number: 3 type: TYPE_ENUM type_name: ".crm.v1.Deal.Stage" label: LABEL_OPTIONAL }
    field { name: "account" number: 4 type: TYPE_MESSAGE type_name: ".crm.v1.Deal.Account" label: LABEL_OPTIONAL }
    field { name: "amount" number: 5 type: TYPE_FLOAT label: LABEL_OPTIONAL proto3_optional: true oneof_index: 0 }
    field { name: "month" number: 6 type: TYPE_SINT32 label: LABEL_OPTIONAL }
    field { name: "created_s" number: 7 type: TYPE_INT64 label: LABEL_OPTIONAL }
    field { name: "tags" number: 8 type: TYPE_STRING label: LABEL_REPEATED }
    oneof_decl { name: "_amount" }
    nested_type {
      name: "Account"
      field { name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
      field { name: "region" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL }
    }
    enum_type {
      name: "Stage"
      value { name: "OPEN" number: 0 }
      value { name: "WON" number: 1 }
      value { name: "LOST" number: 2 }
    }
  }
)pb";

std::shared_ptr<const SourceMapping> Mapping() {
  pb::FileDescriptorSet set;
  pb::Timestamp::descriptor()->file()->CopyTo(set.add_file());
  if (!pb::TextFormat::ParseFromString(kProto, set.add_file())) __builtin_trap();
  SourceSpec s;
  s.topic = "fuzz";
  s.family = kpistream::kpi::Family::kCrm;
  s.format = "protobuf";
  s.descriptor_set = set.SerializeAsString();
  s.message = "crm.v1.Deal";
  s.event_id_field = "id";
  s.event_time = {.field = "closed"};
  s.type_field = "stage";
  s.type_values = {{"OPEN", "opportunity_created"}, {"WON", "opportunity_won"}, {"LOST", "opportunity_lost"}};
  s.fields["account_id"] = {.field = "account.id", .required = true};
  s.fields["region"] = {.field = "account.region", .fallback = "unknown"};
  s.fields["amount"] = {.field = "amount", .scale = 0.01};
  s.fields["cohort_month"] = {.field = "month"};
  s.fields["origin_time"].time = {.field = "created_s", .unit = "s"};
  auto m = SourceMapping::Compile(s);
  if (!m.ok()) __builtin_trap();
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool silenced = [] {
    kpistream::ingest::SilenceProtobufLogging();
    return true;
  }();
  (void)silenced;
  static const std::shared_ptr<const SourceMapping> mapping = Mapping();
  static kpistream::ingest::Decoder decoder;
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  kpistream::kpi::EventView ev;
  kpistream::ingest::DecodeError err;
  if (decoder.DecodeMapped(*mapping, payload, {.topic = "fuzz", .partition = 1, .offset = 2}, &ev, &err)) {
    if (ev.msg == nullptr || ev.type == 0 || ev.event_id.empty()) __builtin_trap();
  } else if (err.detail.empty() || err.retry) {
    __builtin_trap();
  }
  // The framing splitters on the same bytes.
  if (auto frame = kpistream::ingest::SplitConfluentFrame(payload); frame.ok()) {
    if (frame->second.size() + 5 != payload.size()) __builtin_trap();
    if (auto idx = kpistream::ingest::SplitMessageIndexes(frame->second); idx.ok()) {
      if (idx->first.empty() || idx->second.size() > frame->second.size()) __builtin_trap();
    }
  }
  return 0;
}
