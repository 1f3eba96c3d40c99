#include "ingest/local_ingest.h"

#include "state/keys.h"

namespace kpistream::ingest {

LocalIngest::LocalIngest(const kpi::Catalog& catalog, const kpi::StateIds& ids, state::Store* store,
                         ApplierOptions options, const state::Clock& clock)
    : clock_(clock), router_(catalog), acc_(catalog, ids), stats_(catalog) {
  ctx_.catalog = &catalog;
  ctx_.ids = &ids;
  ctx_.store = store;
  ctx_.router = &router_;
  ctx_.options = options;
  ctx_.stats = &stats_;
}

absl::StatusOr<PartitionApplier::Outcome> LocalIngest::Apply(uint32_t stream, int32_t partition, kpi::Family family,
                                                             std::string_view payload, PayloadFormat format,
                                                             PartitionApplier::Rejection* rejection) {
  const uint64_t source = state::SourceId(stream, partition);
  auto it = appliers_.find(source);
  if (it == appliers_.end()) {
    auto a = PartitionApplier::Restore(ctx_, source, family, format, clock_.NowMs());
    if (!a.ok()) return a.status();
    it = appliers_.emplace(source, std::move(*a)).first;
  }
  PartitionApplier::Rejection ignored;
  auto& a = *it->second;
  return a.Apply(payload, a.next_offset(), clock_.NowMs(), &scratch_, &acc_, rejection ? rejection : &ignored);
}

absl::Status LocalIngest::Commit() {
  state::WriteBatch batch(*ctx_.store);
  acc_.Flush(&batch);
  for (const auto& [source, a] : appliers_) {
    if (a->dirty()) a->AppendTo(&batch);
  }
  if (auto st = ctx_.store->Commit(&batch); !st.ok()) return st;
  for (const auto& [source, a] : appliers_) a->OnCommitted();
  return absl::OkStatus();
}

}  // namespace kpistream::ingest
