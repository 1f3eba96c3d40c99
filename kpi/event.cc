#include "kpi/event.h"

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::kpi {

std::optional<Family> ParseFamily(std::string_view name) {
  for (int i = 0; i < kNumFamilies; ++i) {
    if (kFamilyNames[i] == name) return static_cast<Family>(i);
  }
  return std::nullopt;
}

std::string_view FamilyName(Family f) { return kFamilyNames[static_cast<int>(f)]; }

const google::protobuf::Descriptor* FamilyDescriptor(Family f) {
  switch (f) {
    case Family::kCampaign:
      return events::v1::CampaignEvent::descriptor();
    case Family::kProduct:
      return events::v1::ProductEvent::descriptor();
    case Family::kCrm:
      return events::v1::CrmEvent::descriptor();
  }
  return nullptr;
}

std::string_view TypePrefix(Family f) {
  switch (f) {
    case Family::kCampaign:
      return "CAMPAIGN_";
    case Family::kProduct:
      return "PRODUCT_";
    case Family::kCrm:
      return "CRM_";
  }
  return "";
}

}  // namespace kpistream::kpi
