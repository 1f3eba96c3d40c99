// libFuzzer target: the event decoder must never crash, hang or leak on any
// payload, for any family, as protobuf or JSON.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ingest/decoder.h"

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
  } else if (err.detail.empty()) {
    __builtin_trap();  // every rejection says why
  }
  return 0;
}
