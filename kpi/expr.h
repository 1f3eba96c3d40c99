// KPI formulas: arithmetic over measures and constants.
//
//   expr    := term (('+' | '-') term)*
//   term    := factor (('*' | '/') factor)*
//   factor  := number | name | name '(' expr (',' expr)* ')' | '(' expr ')' | '-' factor
//   functions: min, max, abs, coalesce; quantiles of a sketch measure:
//   p50(m), p90(m), p95(m), p99(m), quantile(m, q) with 0 < q < 1;
//   groups_at_least(m, dim, x): how many values of dimension dim have m >= x
//   (e.g. accounts using at least 3 core features).
//   A name may carry its own window: clicks[30d], mrr_change[all] (else the
//   KPI's window applies).
//
// Evaluation never produces inf or NaN: division by zero, a missing operand
// (except inside coalesce) or a non-finite result give "no value".
//
// Thread-safety: immutable after parsing.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::kpi {

struct Expr {
  enum class Op { kNum, kRef, kAdd, kSub, kMul, kDiv, kNeg, kMin, kMax, kAbs, kCoalesce, kQuantile, kGroupsAtLeast };
  Op op = Op::kNum;
  double num = 0;
  int ref = -1;        // index returned by the resolver, for kRef
  std::string name;    // for kRef; the dimension for kGroupsAtLeast
  std::string window;  // for kRef: its own window, empty = the KPI's
  // kQuantile: num is q and args[0] is the kRef of the measure.
  // kGroupsAtLeast: num is the threshold, name the dimension, args[0] the kRef.
  std::vector<Expr> args;
};

// Resolves a name to an index, or nullopt if unknown.
using NameResolver = std::function<std::optional<int>(std::string_view)>;

// Errors say what is wrong and at which column (1-based) of the formula.
[[nodiscard]] absl::StatusOr<Expr> ParseExpr(std::string_view text, const NameResolver& resolve);

// Value of a ref; q is the quantile for refs inside kQuantile, else -1.
using ValueFn = std::function<std::optional<double>(int ref, double q)>;
std::optional<double> Eval(const Expr& e, const ValueFn& value);

// Every ref index used by e, in first-use order, without duplicates.
void CollectRefs(const Expr& e, std::vector<int>* refs);

}  // namespace kpistream::kpi
