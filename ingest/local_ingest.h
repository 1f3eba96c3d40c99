// Applies records to a state store with the engine's own per-partition step
// (PartitionApplier) and commit (partials and positions in one batch), but
// no Kafka: for the micro-benchmark, the fuzzers, tests, and tools that
// replay records from elsewhere. Offsets are numbered per partition from 0.
//
// Thread-safety: not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "ingest/accumulator.h"
#include "ingest/partition_applier.h"
#include "ingest/router.h"
#include "state/clock.h"

namespace kpistream::ingest {

class LocalIngest {
 public:
  // REQUIRES: catalog, ids, store and clock outlive this object.
  LocalIngest(const kpi::Catalog& catalog, const kpi::StateIds& ids, state::Store* store, ApplierOptions options = {},
              const state::Clock& clock = state::Clock::Wall());

  // Applies `payload` as the next record of the partition (stream id,
  // partition) of a family's topic. Errors: only the store's (restoring a
  // partition); rejections are outcomes.
  [[nodiscard]] absl::StatusOr<PartitionApplier::Outcome> Apply(uint32_t stream, int32_t partition, kpi::Family family,
                                                                std::string_view payload,
                                                                PayloadFormat format = PayloadFormat::kAuto,
                                                                PartitionApplier::Rejection* rejection = nullptr);
  // Writes what was applied since the last commit in one batch.
  [[nodiscard]] absl::Status Commit();
  const IngestStats& stats() const { return stats_; }

 private:
  const state::Clock& clock_;
  Router router_;
  Accumulator acc_;
  IngestStats stats_;
  ApplyContext ctx_;
  ApplyScratch scratch_;
  std::map<uint64_t, std::unique_ptr<PartitionApplier>> appliers_;
};

}  // namespace kpistream::ingest
