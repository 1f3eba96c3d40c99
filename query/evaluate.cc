#include "query/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

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

// Keeps the q.top groups by value and merges every other group's partials
// (the caps' own "__other__" group included) into one "__other__" group.
template <typename ValueOf>
absl::Status KeepTop(const kpi::Catalog& catalog, const kpi::KpiDef& kpi, const KpiQuery& q, const ValueOf& value_of,
                     std::vector<GroupValue>* out, std::vector<std::vector<std::optional<state::Partial>>*>* accs_of) {
  auto is_other = [](const GroupValue& g) {
    return std::all_of(g.group.begin(), g.group.end(), [](const auto& d) { return d.second == kOtherGroup; });
  };
  std::vector<size_t> order(out->size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto rank = [&](size_t a, size_t b) {
    const auto& x = (*out)[a];
    const auto& y = (*out)[b];
    if (is_other(x) != is_other(y)) return !is_other(x);  // the caps' __other__ is never a top group
    if (x.value.has_value() != y.value.has_value()) return x.value.has_value();
    if (x.value && *x.value != *y.value) return q.top_ascending ? *x.value < *y.value : *x.value > *y.value;
    return x.group < y.group;
  };
  std::sort(order.begin(), order.end(), rank);
  size_t kept = 0;
  while (kept < order.size() && kept < q.top && !is_other((*out)[order[kept]])) ++kept;
  if (kept == order.size()) return absl::OkStatus();
  std::vector<std::optional<state::Partial>> rest(kpi.inputs.size());
  for (size_t k = kept; k < order.size(); ++k) {
    const auto& accs = *(*accs_of)[order[k]];
    for (size_t i = 0; i < accs.size(); ++i) {
      if (!accs[i]) continue;
      if (!rest[i]) {
        rest[i].emplace(kpi::PartialKind(catalog.measures[static_cast<size_t>(kpi.inputs[i].measure)].aggregation));
      }
      rest[i]->Merge(*accs[i]);
    }
  }
  std::vector<GroupValue> top;
  for (size_t k = 0; k < kept; ++k) top.push_back(std::move((*out)[order[k]]));
  GroupValue other;
  for (const auto& d : q.group_by) other.group.emplace_back(d, kOtherGroup);
  if (auto st = value_of(rest, &other); !st.ok()) return st;
  top.push_back(std::move(other));
  *out = std::move(top);
  accs_of->clear();
  return absl::OkStatus();
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

  using Partials = std::vector<std::optional<state::Partial>>;
  // One group's value and its inputs' values.
  auto value_of = [&](const Partials& accs, GroupValue* gv) -> absl::Status {
    gv->inputs.assign(kpi.inputs.size(), std::nullopt);
    for (size_t i = 0; i < accs.size(); ++i) {
      const auto& m = catalog.measures[static_cast<size_t>(kpi.inputs[i].measure)];
      if (accs[i] && Overflowed(m, &*accs[i])) return SumOverflow(m);
      gv->inputs[i] = group_counts[i] ? group_counts[i] : MeasureValue(m, accs[i] ? &*accs[i] : nullptr, 0.5);
    }
    gv->value = kpi::Eval(kpi.expr, [&](int input, double quantile) -> std::optional<double> {
      const auto i = static_cast<size_t>(input);
      if (group_counts[i]) return group_counts[i];
      return MeasureValue(catalog.measures[static_cast<size_t>(kpi.inputs[i].measure)], accs[i] ? &*accs[i] : nullptr,
                          quantile);
    });
    return absl::OkStatus();
  };
  std::vector<GroupValue> out;
  std::vector<Partials*> accs_of;  // like out
  out.reserve(groups.size());
  for (auto& entry : groups) {
    GroupValue gv;
    if (!q.group_by.empty()) {
      if (!state::SplitGroupKey(entry.first, &vals) || vals.size() != q.group_by.size()) {
        return absl::InternalError("malformed group key");
      }
      for (size_t i = 0; i < q.group_by.size(); ++i) gv.group.emplace_back(q.group_by[i], std::string(vals[i]));
    }
    if (auto st = value_of(entry.second, &gv); !st.ok()) return st;
    out.push_back(std::move(gv));
    accs_of.push_back(&entry.second);
  }
  if (q.top > 0 && !q.group_by.empty()) {
    if (auto st = KeepTop(catalog, kpi, q, value_of, &out, &accs_of); !st.ok()) return st;
  }
  std::sort(out.begin(), out.end(), [](const GroupValue& a, const GroupValue& b) { return a.group < b.group; });
  return out;
}

}  // namespace kpistream::query
