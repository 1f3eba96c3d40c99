#include "query/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "state/keys.h"

namespace kpistream::query {

std::optional<double> MeasureValue(const kpi::MeasureDef& m, const state::Partial* p, double q) {
  static const state::Agg kNoData;
  const state::Agg& agg = p ? p->agg : kNoData;
  switch (m.aggregation) {
    case kpi::Aggregation::kCount:
      return static_cast<double>(agg.count);
    case kpi::Aggregation::kSum:
      if (agg.overflowed()) return std::nullopt;  // Evaluate reports it
      return agg.sum();
    case kpi::Aggregation::kMin:
      if (agg.count == 0) return std::nullopt;
      return agg.min;
    case kpi::Aggregation::kMax:
      if (agg.count == 0) return std::nullopt;
      return agg.max;
    case kpi::Aggregation::kAvg:
      if (agg.count == 0 || agg.overflowed()) return std::nullopt;
      return agg.sum() / static_cast<double>(agg.count);
    case kpi::Aggregation::kDistinct:
      return p && p->hll ? std::round(p->hll->Estimate()) : 0.0;
    case kpi::Aggregation::kQuantile:
      if (!p || !p->sketch) return std::nullopt;
      return p->sketch->Quantile(q);
    case kpi::Aggregation::kLast:
      if (!p || p->last.empty()) return std::nullopt;
      return p->last.value;
  }
  return std::nullopt;
}

namespace {

// A sum (or average) past the fixed-point range is an error, never a number
// (state/aggregate.h, Agg).
absl::Status SumOverflow(const kpi::MeasureDef& m) {
  return absl::OutOfRangeError(fmt::format(
      "measure {}: the sum of {} passes +-9.2e12 in this window, beyond the exact fixed-point range sums are kept "
      "in; use a smaller window or group_by, or scale the field (e.g. kilobytes instead of bytes)",
      m.name, m.field));
}

bool Overflowed(const kpi::MeasureDef& m, const state::Partial* p) {
  return p && (m.aggregation == kpi::Aggregation::kSum || m.aggregation == kpi::Aggregation::kAvg) &&
         p->agg.overflowed();
}

// groups_at_least: the measure's value per group of one dimension, then the
// number of groups whose value reaches the threshold.
absl::StatusOr<double> CountGroups(const kpi::MeasureDef& m, const InputPlan& in, const PartialSnapshot& snapshot) {
  const auto kind = kpi::PartialKind(m.aggregation);
  std::vector<std::string_view> vals;
  std::map<std::string, state::Partial, std::less<>> per_group;
  auto st = snapshot.Collect(in.measure_id, in.pieces, [&](std::string_view gk, std::string_view enc) {
    if (!state::SplitGroupKey(gk, &vals) || vals.size() != m.group_by.size()) return false;
    const auto v = vals[static_cast<size_t>(in.count_index)];
    auto it = per_group.find(v);
    if (it == per_group.end()) it = per_group.emplace(std::string(v), state::Partial(kind)).first;
    return it->second.MergeEncoded(enc);
  });
  if (!st.ok()) return st;
  int64_t n = 0;
  for (const auto& [g, p] : per_group) {
    if (Overflowed(m, &p)) return SumOverflow(m);
    const auto v = MeasureValue(m, &p, 0.5);
    if (v && *v >= in.threshold) ++n;
  }
  return static_cast<double>(n);
}

// A group's identity: its label values, each length-prefixed (any bytes).
std::string GroupKey(const std::vector<std::string_view>& vals, const std::vector<int>& index) {
  std::string key;
  for (int i : index) state::AppendGroupValue(&key, vals[static_cast<size_t>(i)]);
  return key;
}

bool Matches(const std::vector<std::string_view>& vals, const std::vector<std::pair<int, std::string>>& filter) {
  for (const auto& [i, v] : filter) {
    if (vals[static_cast<size_t>(i)] != v) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<GroupValue>> Evaluate(const kpi::Catalog& catalog, const KpiQuery& q, const QueryPlan& plan,
                                                 const PartialSnapshot& snapshot) {
  const kpi::KpiDef& kpi = *plan.kpi;
  // group key -> per-input partial (indexed like kpi.inputs)
  std::map<std::string, std::vector<std::optional<state::Partial>>> groups;
  if (q.group_by.empty()) groups[""].resize(kpi.inputs.size());
  std::vector<std::optional<double>> group_counts(kpi.inputs.size());
  std::vector<std::string_view> vals;
  for (size_t ii = 0; ii < plan.inputs.size(); ++ii) {
    const InputPlan& in = plan.inputs[ii];
    const auto& m = catalog.measures[static_cast<size_t>(in.measure)];
    const auto kind = kpi::PartialKind(m.aggregation);
    auto split = [&](std::string_view group_key) {
      return state::SplitGroupKey(group_key, &vals) && vals.size() == m.group_by.size();
    };
    if (in.count_index >= 0) {
      auto n = CountGroups(m, in, snapshot);
      if (!n.ok()) return n.status();
      group_counts[ii] = *n;
      continue;
    }
    auto st = snapshot.Collect(in.measure_id, in.pieces, [&](std::string_view gk, std::string_view enc) {
      if (!split(gk)) return false;
      if (!Matches(vals, in.filter)) return true;
      auto& accs = groups[GroupKey(vals, in.group_index)];
      if (accs.empty()) accs.resize(kpi.inputs.size());
      auto& acc = accs[ii];
      if (!acc) acc.emplace(kind);
      return acc->MergeEncoded(enc);
    });
    if (!st.ok()) return st;
  }
  // The groups other measures of the same families saw in the window: a
  // count of nothing is 0, and related KPIs list the same groups.
  for (const InputPlan& in : plan.domain) {
    const auto& m = catalog.measures[static_cast<size_t>(in.measure)];
    auto st = snapshot.Collect(in.measure_id, in.pieces, [&](std::string_view gk, std::string_view) {
      if (!state::SplitGroupKey(gk, &vals) || vals.size() != m.group_by.size()) return false;
      if (!Matches(vals, in.filter)) return true;
      auto& accs = groups[GroupKey(vals, in.group_index)];
      if (accs.empty()) accs.resize(kpi.inputs.size());
      return true;
    });
    if (!st.ok()) return st;
  }

  std::vector<GroupValue> out;
  out.reserve(groups.size());
  for (auto& entry : groups) {
    auto& accs = entry.second;  // a named reference: lambdas cannot capture bindings in clang 14
    for (size_t i = 0; i < accs.size(); ++i) {
      const auto& m = catalog.measures[static_cast<size_t>(kpi.inputs[i].measure)];
      if (accs[i] && Overflowed(m, &*accs[i])) return SumOverflow(m);
    }
    GroupValue gv;
    if (!q.group_by.empty()) {
      if (!state::SplitGroupKey(entry.first, &vals) || vals.size() != q.group_by.size()) {
        return absl::InternalError("malformed group key");
      }
      for (size_t i = 0; i < q.group_by.size(); ++i) gv.group.emplace_back(q.group_by[i], std::string(vals[i]));
    }
    gv.value = kpi::Eval(kpi.expr, [&](int input, double quantile) -> std::optional<double> {
      const auto i = static_cast<size_t>(input);
      if (group_counts[i]) return group_counts[i];
      return MeasureValue(catalog.measures[static_cast<size_t>(kpi.inputs[i].measure)], accs[i] ? &*accs[i] : nullptr,
                          quantile);
    });
    out.push_back(std::move(gv));
  }
  std::sort(out.begin(), out.end(), [](const GroupValue& a, const GroupValue& b) { return a.group < b.group; });
  return out;
}

}  // namespace kpistream::query
