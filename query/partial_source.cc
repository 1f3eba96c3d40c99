#include "query/partial_source.h"

#include <fmt/format.h>

#include <algorithm>
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
    if (owned) {
      std::sort(owned->sources.begin(), owned->sources.end());
      missing_ = std::move(owned->missing);
    }
    for (const auto& s : *sources) {
      if (owned && !std::binary_search(owned->sources.begin(), owned->sources.end(), s.source)) continue;
      positions_.push_back({s.source, s.next_offset, s.newest_event_ms});
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
  const uint64_t epoch = epoch_ ? epoch_() : 0;
  std::optional<Ownership> owned;
  if (ownership_) owned = ownership_();
  auto snap = std::make_unique<LocalSnapshot>(std::move(owned), epoch, store_.View());
  if (auto st = snap->Load(); !st.ok()) return st;
  return snap;
}

}  // namespace kpistream::query
