#include "query/partial_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>

namespace kpistream::query {

namespace {

class LocalSnapshot final : public PartialSnapshot {
 public:
  // The ownership is read before the view is taken: a partition is
  // published as owned only once its restore committed, so the view then
  // holds the restored state.
  LocalSnapshot(std::optional<Ownership> owned, uint64_t epoch, std::unique_ptr<state::ReadView> view)
      : view_(std::move(view)), owned_(std::move(owned)), epoch_(epoch) {}
  // owned_ empty: every partition in the store.
  absl::Status Load() {
    auto sources = view_->Sources();
    if (!sources.ok()) return sources.status();
    std::optional<Ownership>& owned = owned_;
    // owned source -> its partition's name
    std::vector<std::pair<uint64_t, std::string>> names;
    if (owned) {
      for (size_t i = 0; i < owned->sources.size(); ++i) {
        names.emplace_back(owned->sources[i], i < owned->names.size() ? owned->names[i] : std::string());
      }
      std::sort(names.begin(), names.end());
      missing_ = std::move(owned->missing);
    }
    for (const auto& s : *sources) {
      std::string name;
      if (owned) {
        auto it = std::lower_bound(names.begin(), names.end(), std::make_pair(s.source, std::string()));
        if (it == names.end() || it->first != s.source) continue;
        name = it->second;
      }
      positions_.push_back({s.source, s.next_offset, s.newest_event_ms, std::move(name), ""});
    }
    // An owned partition with nothing committed yet (an empty one) is in
    // the answer too, at offset 0: peers must not count it as missing.
    for (const auto& owned_name : names) {
      const uint64_t source = owned_name.first;  // a plain name: lambdas may not capture bindings (C++20)
      if (std::none_of(positions_.begin(), positions_.end(),
                       [&](const PartitionPosition& p) { return p.source == source; })) {
        positions_.push_back({source, 0, std::numeric_limits<int64_t>::min(), owned_name.second, ""});
      }
    }
    return absl::OkStatus();
  }
  absl::Status ScanPartitions(const std::vector<std::string>& partitions, kpi::Tier tier, uint32_t measure_id,
                              int64_t begin, int64_t end, const BucketVisitor& visit) const override {
    for (const auto& name : partitions) {
      auto it = std::find_if(positions_.begin(), positions_.end(),
                             [&](const PartitionPosition& p) { return !p.partition.empty() && p.partition == name; });
      if (it == positions_.end()) {
        return absl::FailedPreconditionError(fmt::format("partition {} is not in this snapshot", name));
      }
      if (auto st = view_->Scan(tier, measure_id, it->source, begin, end, visit); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  const std::vector<std::string>& missing() const override { return missing_; }
  // As LocalPartialSource::Sequence: the store's sequence plus the
  // ownership epoch, so every cache keys alike.
  uint64_t sequence() const override { return view_->sequence() + epoch_; }
  const std::vector<PartitionPosition>& positions() const override { return positions_; }
  absl::Status Collect(uint32_t measure_id, const std::vector<kpi::WindowPiece>& pieces,
                       const PartialVisitor& visit) const override {
    absl::Status bad = absl::OkStatus();
    auto fn = [&](int64_t, std::string_view group_key, std::string_view enc) {
      if (bad.ok() && !visit(group_key, enc)) {
        bad = absl::DataLossError(fmt::format("malformed partial of measure id {}", measure_id));
      }
    };
    for (const auto& p : positions_) {
      for (const auto& piece : pieces) {
        if (auto st = view_->Scan(piece.tier, measure_id, p.source, piece.begin, piece.end, fn); !st.ok()) return st;
        if (!bad.ok()) return bad;
      }
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<state::ReadView> view_;
  std::vector<PartitionPosition> positions_;
  std::vector<std::string> missing_;
  std::optional<Ownership> owned_;
  uint64_t epoch_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PartialSnapshot>> LocalPartialSource::Snapshot() const {
  std::optional<Ownership> owned;
  if (ownership_) owned = ownership_();
  const uint64_t epoch = owned && owned->epoch ? *owned->epoch : epoch_ ? epoch_() : 0;
  auto snap = std::make_unique<LocalSnapshot>(std::move(owned), epoch, store_.View());
  if (auto st = snap->Load(); !st.ok()) return st;
  return snap;
}

}  // namespace kpistream::query
