// The event model shared by decoders, routing and the generator.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace google::protobuf {
class Message;
class Descriptor;
}  // namespace google::protobuf

namespace kpistream::kpi {

enum class Family : uint8_t { kCampaign = 0, kProduct = 1, kCrm = 2 };
inline constexpr int kNumFamilies = 3;
inline constexpr std::string_view kFamilyNames[] = {"campaign", "product", "crm"};

std::optional<Family> ParseFamily(std::string_view name);
std::string_view FamilyName(Family f);
// Descriptor of the family's message (kpistream.events.v1.*Event).
const google::protobuf::Descriptor* FamilyDescriptor(Family f);
// Prefix of the family's enum value names, e.g. "CAMPAIGN_".
std::string_view TypePrefix(Family f);

// A decoded, validated event. The message is owned by the decoder and valid
// until its next Decode call.
struct EventView {
  Family family;
  int type = 0;         // enum number of the family's type enum
  int64_t time_ms = 0;  // event time, ms since the epoch
  const google::protobuf::Message* msg = nullptr;
  std::string_view event_id;  // points into msg; never empty once decoded
};

}  // namespace kpistream::kpi
