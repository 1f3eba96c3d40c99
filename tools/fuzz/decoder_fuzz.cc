// libFuzzer target: the event decoder must never crash, hang or leak on any
// payload, for any family, as protobuf or JSON. For JSON it is also a
// differential test of kpid's own proto3-JSON reader (simdjson) against
// protobuf's JsonStringToMessage, both ways: the same records accepted,
// into the same message, and the same reason for the ones refused after
// parsing.
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "ingest/decoder.h"
#include "kpi/event.h"

namespace pb = google::protobuf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool init = [] {
    kpistream::ingest::SilenceProtobufLogging();
    return true;
  }();
  (void)init;
  static kpistream::ingest::Decoder decoder, reference_decoder;
  if (size == 0) return 0;
  // First byte picks the family and the format; the rest is the payload.
  const auto family = static_cast<kpistream::kpi::Family>(data[0] % kpistream::kpi::kNumFamilies);
  const auto format = static_cast<kpistream::ingest::PayloadFormat>((data[0] / 3) % 3);
  kpistream::kpi::EventView ev;
  kpistream::ingest::DecodeError err;
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool ok = decoder.Decode(family, payload, format, &ev, &err);
  if (ok && (ev.msg == nullptr || ev.type == 0)) __builtin_trap();  // a decoded event must be consistent
  if (!ok && err.detail.empty()) __builtin_trap();                  // every rejection says why
  const size_t first = payload.find_first_not_of(" \t\r\n");
  const bool json =
      !payload.empty() &&
      (format == kpistream::ingest::PayloadFormat::kJson ||
       (format == kpistream::ingest::PayloadFormat::kAuto && first != std::string_view::npos && payload[first] == '{'));
  if (!json) return 0;
  // The reference: protobuf's parser, then the same checks on its message
  // (decoded again from its binary form).
  std::unique_ptr<pb::Message> reference(
      pb::MessageFactory::generated_factory()->GetPrototype(kpistream::kpi::FamilyDescriptor(family))->New());
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto st =
      pb::util::JsonStringToMessage(pb::StringPiece(payload.data(), payload.size()), reference.get(), options);
  if (!st.ok()) {
    if (ok) __builtin_trap();  // kpid accepted what protobuf's parser refuses
    return 0;
  }
  // By design kpid refuses JSON nested deeper than 64 levels, which
  // protobuf's parser skips inside unknown fields.
  if (!ok && err.detail.find("nested more than") != std::string::npos) return 0;
  // And kpid follows RFC 8259 where protobuf's parser is lenient: raw
  // control characters in strings are not JSON.
  if (!ok && err.reason == kpistream::ingest::RejectReason::kBadJson &&
      std::any_of(payload.begin(), payload.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 && c != ' ' && c != '\t' && c != '\r' && c != '\n';
      })) {
    return 0;
  }
  const std::string binary = reference->SerializeAsString();
  kpistream::kpi::EventView ref_ev;
  kpistream::ingest::DecodeError ref_err;
  const bool ref_ok =
      reference_decoder.Decode(family, binary, kpistream::ingest::PayloadFormat::kProtobuf, &ref_ev, &ref_err);
  if (binary.empty()) {
    if (ok) __builtin_trap();  // "{}" and the like: no event either way
    return 0;
  }
  if (ok != ref_ok) __builtin_trap();                                 // one reads an event the other refuses
  if (ok && binary != ev.msg->SerializeAsString()) __builtin_trap();  // read differently
  if (!ok && err.reason != ref_err.reason) __builtin_trap();          // refused for another reason
  return 0;
}
