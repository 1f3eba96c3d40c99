#include "ingest/admission.h"

namespace kpistream::ingest {

PartitionAdmission::PartitionAdmission(const kpi::Catalog& catalog, const kpi::StateIds& ids, int64_t newest_event_ms,
                                       CommittedLookup committed)
    : catalog_(catalog), ids_(ids), newest_ms_(newest_event_ms), committed_(std::move(committed)) {}

void PartitionAdmission::RestoreCount(uint32_t dimension_id, uint32_t count) { counts_[dimension_id] = count; }

bool PartitionAdmission::Late(int measure, int64_t event_time_ms) const {
  return newest_ms_ != kNoEvents &&
         event_time_ms < newest_ms_ - catalog_.measures[static_cast<size_t>(measure)].lateness_ms;
}

std::string_view PartitionAdmission::Admit(int dimension, std::string_view value,
                                           std::vector<std::pair<uint32_t, std::string>>* new_values, bool* overflow) {
  const auto d = static_cast<size_t>(dimension);
  const uint32_t id = ids_.dimensions[d];
  auto& set = kept_[id];
  *overflow = false;
  if (set.contains(absl::string_view(value.data(), value.size()))) return value;
  auto& count = counts_[id];
  if (committed_ && committed_(id, value)) {
    set.emplace(value);
    return value;
  }
  if (count < catalog_.dimensions[d].max_values) {
    set.emplace(value);
    ++count;
    new_values->emplace_back(id, std::string(value));
    return value;
  }
  *overflow = true;
  return kOtherGroupValue;
}

}  // namespace kpistream::ingest
