// KPI formulas: arithmetic over measures and constants.
//
//   expr    := term (('+' | '-') term)*
//   term    := factor (('*' | '/') factor)*
//   factor  := number | name | name '(' expr (',' expr)* ')' | '(' expr ')' | '-' factor
//   functions: min, max, abs, coalesce
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

namespace kpistream::pipeline {

struct Expr {
  enum class Op { kNum, kRef, kAdd, kSub, kMul, kDiv, kNeg, kMin, kMax, kAbs, kCoalesce };
  Op op = Op::kNum;
  double num = 0;
  int ref = -1;      // index returned by the resolver, for kRef
  std::string name;  // for kRef
  std::vector<Expr> args;
};

// Resolves a name to an index, or nullopt if unknown.
using NameResolver = std::function<std::optional<int>(std::string_view)>;

// Errors say what is wrong and at which column (1-based) of the formula.
[[nodiscard]] absl::StatusOr<Expr> ParseExpr(std::string_view text, const NameResolver& resolve);

using ValueFn = std::function<std::optional<double>(int ref)>;
std::optional<double> Eval(const Expr& e, const ValueFn& value);

// Every ref index used by e, in first-use order, without duplicates.
void CollectRefs(const Expr& e, std::vector<int>* refs);

}  // namespace kpistream::pipeline
