#include "pipeline/event.h"

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::pipeline {

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
    case RejectReason::kCount_:
      break;
  }
  return "unknown";
}

}  // namespace kpistream::pipeline
