#include "ingest/partition_applier.h"

#include "ingest/source_mapping.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <limits>
#include <set>

#include "state/keys.h"

namespace kpistream::ingest {

IngestStats::IngestStats(const kpi::Catalog& catalog)
    : late_by_measure(catalog.measures.size()),
      time_fallback_by_measure(catalog.measures.size()),
      overflow_by_dimension(catalog.dimensions.size()),
      cut_by_dimension(catalog.dimensions.size()) {}

absl::StatusOr<std::unique_ptr<PartitionApplier>> PartitionApplier::Restore(const ApplyContext& ctx, uint64_t source,
                                                                            kpi::Family family, PayloadFormat format,
                                                                            int64_t now_ms,
                                                                            const SourceMapping* mapping,
                                                                            std::string topic) {
  std::unique_ptr<PartitionApplier> a(new PartitionApplier(ctx, source, family, format));
  a->mapping_ = mapping;
  a->topic_ = !topic.empty() || mapping == nullptr ? std::move(topic) : mapping->spec().topic;
  auto stored = ctx.store->ReadOffset(source);
  if (!stored.ok()) return stored.status();
  int64_t newest = PartitionAdmission::kNoEvents;
  if (stored->has_value()) {
    a->committed_offset_ = (*stored)->next_offset;
    a->next_offset_ = (*stored)->next_offset;
    newest = (*stored)->newest_event_ms;
    if (newest != PartitionAdmission::kNoEvents && newest > now_ms + ctx.options.max_future_ms) {
      // Stamped by an event from a wrong clock before kpid refused those:
      // left alone, it would make every on-time event late for as long as
      // the clock was wrong by.
      spdlog::warn(
          "partition {}:{}: the committed event-time watermark {} ms is {} s ahead of the clock; resetting it to "
          "now (an event from a wrong clock was applied before max_future was enforced)",
          state::StreamOf(source), state::PartitionOf(source), newest, (newest - now_ms) / 1000);
      newest = now_ms;
      a->watermark_reset_ = true;
      a->reset_newest_ms_ = now_ms;
      ctx.stats->watermarks_reset.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (auto st = a->LoadAdmission(newest); !st.ok()) return st;
  return a;
}

absl::Status PartitionApplier::LoadAdmission(int64_t newest_event_ms) {
  const uint64_t source = source_;
  state::Store* store = ctx_.store;
  admission_ = std::make_unique<PartitionAdmission>(*ctx_.catalog, *ctx_.ids, newest_event_ms,
                                                    [store, source](uint32_t id, std::string_view value) {
                                                      auto has = store->HasKeptValue(source, id, value);
                                                      // A failing lookup counts as "not kept": the value may go to
                                                      // __other__ but is never double counted.
                                                      if (!has.ok())
                                                        spdlog::error("kept-value lookup: {}", has.status().ToString());
                                                      return has.ok() && *has;
                                                    });
  auto counts = store->ReadKeptCounts(source);
  if (!counts.ok()) return counts.status();
  for (const auto& [id, n] : *counts) admission_->RestoreCount(id, n);
  return absl::OkStatus();
}

int64_t PartitionApplier::DedupHorizon() const {
  const int64_t newest = admission_->newest_event_ms();
  return newest == PartitionAdmission::kNoEvents ? std::numeric_limits<int64_t>::min()
                                                 : newest - ctx_.options.dedup_window_ms;
}

std::optional<bool> PartitionApplier::IsDuplicate(const kpi::EventView& ev, int64_t offset, ApplyScratch* scratch,
                                                  Rejection* rejection) {
  const int64_t horizon = DedupHorizon();
  int64_t applied_at = -1;
  scratch->id_key = state::EventIdKey(source_, ev.event_id);
  if (auto it = pending_ids_.find(scratch->id_key); it != pending_ids_.end()) {
    if (it->second.event_ms < horizon) return false;  // as if committed (below)
    applied_at = it->second.offset;
  } else {
    auto seen = ctx_.store->LookupEventIdKey(scratch->id_key);
    if (!seen.ok()) {
      spdlog::error("partition {}: {}; holding the partition and retrying", state::PartitionOf(source_),
                    seen.status().ToString());
      return std::nullopt;
    }
    // Ids behind the horizon may or may not be compacted away yet: ignore
    // them either way, so a replay decides exactly as the first pass did.
    if (!seen->has_value() || (*seen)->event_ms < horizon) return false;
    applied_at = (*seen)->offset;
  }
  (void)offset;
  *rejection = {RejectReason::kDuplicate, fmt::format("event_id \"{}\" was already applied from this partition at "
                                                      "offset {}",
                                                      ev.event_id, applied_at)};
  return true;
}

void PartitionApplier::AdmitDimensions(ApplyScratch* scratch) {
  const kpi::Catalog& catalog = *ctx_.catalog;
  IngestStats& stats = *ctx_.stats;
  const auto& routed = scratch->routed;
  const size_t n = routed.contributions.size();
  // Which value each dimension keeps, decided once per event for every
  // measure grouping by it.
  scratch->dim_needed.assign(catalog.dimensions.size(), 0);
  for (size_t i = 0; i < n; ++i) {
    if (scratch->late[i]) continue;
    for (int d : catalog.measures[static_cast<size_t>(routed.contributions[i].measure)].group_dims) {
      scratch->dim_needed[static_cast<size_t>(d)] = 1;
    }
  }
  scratch->kept.resize(catalog.dimensions.size());
  for (int d : routed.dims_used) {
    const auto di = static_cast<size_t>(d);
    if (!scratch->dim_needed[di]) continue;
    bool overflow = false;
    scratch->kept[di] = admission_->Admit(d, routed.dim_values[di], &new_values_, &overflow);
    if (overflow) stats.overflow_by_dimension[di].fetch_add(1, std::memory_order_relaxed);
  }
  for (int d : routed.cut) {
    if (scratch->dim_needed[static_cast<size_t>(d)]) {
      stats.cut_by_dimension[static_cast<size_t>(d)].fetch_add(1, std::memory_order_relaxed);
    }
  }
}

PartitionApplier::Outcome PartitionApplier::Apply(std::string_view payload, int64_t offset, int64_t now_ms,
                                                  ApplyScratch* scratch, Accumulator* acc, Rejection* rejection,
                                                  int64_t timestamp_ms) {
  if (offset < next_offset_) return Outcome::kSkipped;
  IngestStats& stats = *ctx_.stats;
  stats.consumed.fetch_add(1, std::memory_order_relaxed);
  const kpi::Catalog& catalog = *ctx_.catalog;
  auto reject = [&](RejectReason reason, std::string detail) {
    *rejection = {reason, std::move(detail)};
    stats.rejected[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
    next_offset_ = offset + 1;
    return Outcome::kRejected;
  };
  kpi::EventView ev;
  DecodeError err;
  const bool decoded = mapping_ ? scratch->decoder.DecodeMapped(*mapping_, payload,
                                                                {.topic = topic_,
                                                                 .partition = state::PartitionOf(source_),
                                                                 .offset = offset,
                                                                 .timestamp_ms = timestamp_ms},
                                                                &ev, &err)
                                : scratch->decoder.Decode(family_, payload, format_, &ev, &err);
  if (!decoded && err.retry) {
    // Not the record's fault: it is read again later, never dead-lettered.
    *rejection = {err.reason, std::move(err.detail)};
    stats.schema_registry_retries.fetch_add(1, std::memory_order_relaxed);
    return Outcome::kHeld;
  }
  if (!decoded) return reject(err.reason, std::move(err.detail));
  if (ev.time_ms > now_ms + ctx_.options.max_future_ms) {
    return reject(RejectReason::kFuture,
                  fmt::format("event time {} ms is {} s ahead of kpid's clock; at most max_future ({} s) is "
                              "accepted (is the producer's clock right?)",
                              ev.time_ms, (ev.time_ms - now_ms) / 1000, ctx_.options.max_future_ms / 1000));
  }
  if (ctx_.options.dedup_window_ms > 0) {
    const auto dup = IsDuplicate(ev, offset, scratch, rejection);
    if (!dup.has_value()) {
      stats.dedup_lookup_failures.fetch_add(1, std::memory_order_relaxed);
      return Outcome::kUnknown;
    }
    if (*dup) return reject(rejection->reason, std::move(rejection->detail));
  }
  ctx_.router->Route(ev, &scratch->routed);
  auto& routed = scratch->routed;
  const size_t n = routed.contributions.size();
  // Lateness is judged on the event's own time, whatever time a measure
  // files it under.
  scratch->late.assign(n, 0);
  size_t late = 0;
  for (size_t i = 0; i < n; ++i) {
    const int m = routed.contributions[i].measure;
    if (admission_->Late(m, ev.time_ms)) {
      scratch->late[i] = 1;
      ++late;
      stats.late_by_measure[static_cast<size_t>(m)].fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (n > 0 && late == n) {
    return reject(RejectReason::kLate,
                  fmt::format("event time {} ms is older than the partition's newest event {} ms minus the allowed "
                              "lateness of every measure it feeds",
                              ev.time_ms, admission_->newest_event_ms()));
  }
  AdmitDimensions(scratch);
  for (size_t i = 0; i < n; ++i) {
    if (scratch->late[i]) continue;
    const auto& c = routed.contributions[i];
    const auto& m = catalog.measures[static_cast<size_t>(c.measure)];
    scratch->key.clear();
    for (int d : m.group_dims) state::AppendGroupValue(&scratch->key, scratch->kept[static_cast<size_t>(d)]);
    acc->Add(c, source_, scratch->key);
    if (c.time_fallback) {
      stats.time_fallback_by_measure[static_cast<size_t>(c.measure)].fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (ctx_.options.dedup_window_ms > 0) pending_ids_.emplace(scratch->id_key, AppliedId{ev.time_ms, offset});
  admission_->Observe(ev.time_ms);
  stats.applied.fetch_add(1, std::memory_order_relaxed);
  next_offset_ = offset + 1;
  return Outcome::kApplied;
}

void PartitionApplier::AppendTo(state::WriteBatch* batch) const {
  batch->PutOffset(source_, next_offset_, admission_->newest_event_ms());
  for (const auto& [k, v] : pending_ids_) {
    batch->PutEventId(source_, std::string_view(k).substr(8), v.event_ms, v.offset);
  }
  std::set<uint32_t> counted;
  for (const auto& [id, value] : new_values_) {
    batch->PutKeptValue(source_, id, value);
    counted.insert(id);
  }
  for (uint32_t id : counted) batch->PutKeptCount(source_, id, admission_->counts().at(id));
}

void PartitionApplier::OnCommitted() {
  committed_offset_ = next_offset_;
  watermark_reset_ = false;
  new_values_.clear();
  pending_ids_.clear();
  if (ctx_.options.dedup_window_ms > 0) ctx_.store->SetEventIdHorizon(source_, DedupHorizon());
}

absl::Status PartitionApplier::Rewind() {
  new_values_.clear();
  pending_ids_.clear();
  next_offset_ = committed_offset_.value_or(0);
  auto stored = ctx_.store->ReadOffset(source_);
  if (!stored.ok()) return stored.status();
  int64_t newest = stored->has_value() ? (*stored)->newest_event_ms : PartitionAdmission::kNoEvents;
  // A watermark reset at restore and not committed yet stays reset.
  if (watermark_reset_) newest = reset_newest_ms_;
  return LoadAdmission(newest);
}

}  // namespace kpistream::ingest
