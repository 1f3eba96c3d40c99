#include "query/partial_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace kpistream::query {

namespace {

class LocalSnapshot final : public PartialSnapshot {
 public:
  explicit LocalSnapshot(std::unique_ptr<state::ReadView> view) : view_(std::move(view)) {}
  // ownership null: every partition in the store.
  absl::Status Load(const OwnershipFn& ownership) {
    auto sources = view_->Sources();
    if (!sources.ok()) return sources.status();
    std::optional<Ownership> owned;
    if (ownership) {
      owned = ownership();
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
  uint64_t sequence() const override { return view_->sequence(); }
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
};

}  // namespace

absl::StatusOr<std::unique_ptr<PartialSnapshot>> LocalPartialSource::Snapshot() const {
  auto snap = std::make_unique<LocalSnapshot>(store_.View());
  if (auto st = snap->Load(ownership_); !st.ok()) return st;
  return snap;
}

}  // namespace kpistream::query
