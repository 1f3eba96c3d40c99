#include "ingest/admission.h"

#include "state/keys.h"

namespace kpistream::ingest {

PartitionAdmission::PartitionAdmission(const kpi::Catalog& catalog, int64_t newest_event_ms, CommittedLookup committed)
    : catalog_(catalog), newest_ms_(newest_event_ms), committed_(std::move(committed)) {
  for (const auto& m : catalog.measures) {
    std::string key;
    for (size_t i = 0; i < m.group_by.size(); ++i) state::AppendGroupValue(&key, kOtherGroupValue);
    other_keys_.push_back(std::move(key));
  }
}

void PartitionAdmission::RestoreCount(uint32_t measure_id, uint32_t count) { counts_[measure_id] = count; }

AdmitResult PartitionAdmission::Admit(int64_t time_ms, std::vector<Contribution>* contribs,
                                      std::vector<std::pair<uint32_t, std::string>>* new_groups,
                                      std::vector<int>* late_measures, std::vector<int>* overflow_measures) {
  AdmitResult r;
  r.contributions = static_cast<int>(contribs->size());
  size_t kept = 0;
  for (size_t i = 0; i < contribs->size(); ++i) {
    Contribution c = (*contribs)[i];
    const auto& m = catalog_.measures[static_cast<size_t>(c.measure)];
    if (newest_ms_ != kNoEvents && time_ms < newest_ms_ - m.lateness_ms) {
      ++r.late;
      late_measures->push_back(c.measure);
      continue;
    }
    if (!m.group_by.empty()) {
      auto& set = admitted_[m.id];
      if (!set.contains(absl::string_view(c.group.data(), c.group.size()))) {
        auto& count = counts_[m.id];
        if (committed_ && committed_(m.id, c.group)) {
          set.emplace(c.group);
        } else if (count < m.max_groups) {
          set.emplace(c.group);
          ++count;
          new_groups->emplace_back(m.id, std::string(c.group));
        } else {
          c.group = other_keys_[static_cast<size_t>(c.measure)];
          ++r.overflow;
          overflow_measures->push_back(c.measure);
        }
      }
    }
    (*contribs)[kept++] = c;
  }
  contribs->resize(kept);
  if (!r.all_late() && time_ms > newest_ms_) newest_ms_ = time_ms;
  return r;
}

}  // namespace kpistream::ingest
