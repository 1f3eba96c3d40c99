// libFuzzer target: the event decoder must never crash, hang or leak on any
// payload, for any family, as protobuf or JSON. For JSON it is also a
// differential test of kpid's own proto3-JSON reader (simdjson) against
// protobuf's JsonStringToMessage: whatever kpid accepts, protobuf's parser
// must accept too, into the same message.
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

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
  static kpistream::ingest::Decoder decoder;
  if (size == 0) return 0;
  // First byte picks the family and the format; the rest is the payload.
  const auto family = static_cast<kpistream::kpi::Family>(data[0] % kpistream::kpi::kNumFamilies);
  const auto format = static_cast<kpistream::ingest::PayloadFormat>((data[0] / 3) % 3);
  kpistream::kpi::EventView ev;
  kpistream::ingest::DecodeError err;
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  if (decoder.Decode(family, payload, format, &ev, &err)) {
    // A decoded event must be consistent.
    if (ev.msg == nullptr || ev.type == 0) __builtin_trap();
    const bool json = format == kpistream::ingest::PayloadFormat::kJson ||
                      (format == kpistream::ingest::PayloadFormat::kAuto &&
                       payload.find_first_not_of(" \t\r\n") != std::string_view::npos &&
                       payload[payload.find_first_not_of(" \t\r\n")] == '{');
    if (json) {
      std::unique_ptr<pb::Message> reference(
          pb::MessageFactory::generated_factory()->GetPrototype(kpistream::kpi::FamilyDescriptor(family))->New());
      pb::util::JsonParseOptions options;
      options.ignore_unknown_fields = true;
      const auto st =
          pb::util::JsonStringToMessage(pb::StringPiece(payload.data(), payload.size()), reference.get(), options);
      if (!st.ok()) __builtin_trap();  // kpid accepted what protobuf's parser refuses
      if (reference->SerializeAsString() != ev.msg->SerializeAsString()) __builtin_trap();  // read differently
    }
  } else if (err.detail.empty()) {
    __builtin_trap();  // every rejection says why
  }
  return 0;
}
