#include "kpi/expr.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace kpistream::kpi {
namespace {

class Parser {
 public:
  Parser(std::string_view text, const NameResolver& resolve) : s_(text), resolve_(resolve) {}

  absl::StatusOr<Expr> Parse() {
    auto e = ParseSum();
    if (!e.ok()) return e;
    Skip();
    if (pos_ != s_.size()) return Error(fmt::format("unexpected '{}'", s_[pos_]));
    return e;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(fmt::format("formula \"{}\": {} at column {}", s_, what, pos_ + 1));
  }
  void Skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Eat(char c) {
    Skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  absl::StatusOr<Expr> ParseSum() {
    auto lhs = ParseTerm();
    if (!lhs.ok()) return lhs;
    while (true) {
      Expr::Op op;
      if (Eat('+')) {
        op = Expr::Op::kAdd;
      } else if (Eat('-')) {
        op = Expr::Op::kSub;
      } else {
        return lhs;
      }
      auto rhs = ParseTerm();
      if (!rhs.ok()) return rhs;
      Expr e;
      e.op = op;
      e.args = {std::move(*lhs), std::move(*rhs)};
      lhs = std::move(e);
    }
  }

  absl::StatusOr<Expr> ParseTerm() {
    auto lhs = ParseFactor();
    if (!lhs.ok()) return lhs;
    while (true) {
      Expr::Op op;
      if (Eat('*')) {
        op = Expr::Op::kMul;
      } else if (Eat('/')) {
        op = Expr::Op::kDiv;
      } else {
        return lhs;
      }
      auto rhs = ParseFactor();
      if (!rhs.ok()) return rhs;
      Expr e;
      e.op = op;
      e.args = {std::move(*lhs), std::move(*rhs)};
      lhs = std::move(e);
    }
  }

  absl::StatusOr<Expr> ParseFactor() {
    if (++depth_ > 64) return Error("formula nested too deeply");
    struct DepthGuard {
      int* d;
      ~DepthGuard() { --*d; }
    } guard{&depth_};
    Skip();
    if (pos_ >= s_.size()) return Error("expected a number, a measure or '(' but the formula ended");
    if (Eat('(')) {
      auto e = ParseSum();
      if (!e.ok()) return e;
      if (!Eat(')')) return Error("expected ')'");
      return e;
    }
    if (Eat('-')) {
      auto inner = ParseFactor();
      if (!inner.ok()) return inner;
      Expr e;
      e.op = Expr::Op::kNeg;
      e.args = {std::move(*inner)};
      return e;
    }
    const char c = s_[pos_];
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      Expr e;
      const auto* begin = s_.data() + pos_;
      auto [ptr, ec] = std::from_chars(begin, s_.data() + s_.size(), e.num);
      if (ec != std::errc() || !std::isfinite(e.num)) return Error("malformed number");
      pos_ += static_cast<size_t>(ptr - begin);
      return e;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const size_t start = pos_;
      while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
        ++pos_;
      }
      const std::string_view name = s_.substr(start, pos_ - start);
      if (Eat('(')) return ParseCall(name, start);
      auto idx = resolve_(name);
      if (!idx) {
        pos_ = start;
        return Error(fmt::format("unknown name '{}': not a measure, KPI or constant of this file", name));
      }
      Expr e;
      e.op = Expr::Op::kRef;
      e.ref = *idx;
      e.name = std::string(name);
      if (Eat('[')) {
        Skip();
        const size_t ws = pos_;
        while (pos_ < s_.size() && s_[pos_] != ']' && !std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        e.window = std::string(s_.substr(ws, pos_ - ws));
        if (e.window.empty()) return Error("expected a window inside [ ], e.g. clicks[30d]");
        if (!Eat(']')) return Error("expected ']' after the window");
      }
      return e;
    }
    return Error(fmt::format("unexpected '{}'", c));
  }

  absl::StatusOr<Expr> ParseCall(std::string_view name, size_t start) {
    Expr e;
    size_t min_args = 1, max_args = 64;
    static constexpr std::pair<std::string_view, double> kPercentiles[] = {
        {"p50", 0.5}, {"p90", 0.9}, {"p95", 0.95}, {"p99", 0.99}, {"quantile", -1}};
    for (const auto& [fn, q] : kPercentiles) {
      if (name != fn) continue;
      auto arg = ParseSum();
      if (!arg.ok()) return arg;
      if (arg->op != Expr::Op::kRef) {
        pos_ = start;
        return Error(fmt::format("{}() takes a measure name first", name));
      }
      e.op = Expr::Op::kQuantile;
      e.num = q;
      if (q < 0) {
        if (!Eat(',')) return Error("quantile(measure, q) needs q, e.g. quantile(latency, 0.9)");
        Skip();
        const auto* begin = s_.data() + pos_;
        auto [ptr, ec] = std::from_chars(begin, s_.data() + s_.size(), e.num);
        if (ec != std::errc() || !(e.num > 0 && e.num < 1)) return Error("q must be a number between 0 and 1");
        pos_ += static_cast<size_t>(ptr - begin);
      }
      if (!Eat(')')) return Error("expected ')'");
      e.args.push_back(std::move(*arg));
      return e;
    }
    if (name == "groups_at_least") {
      auto arg = ParseSum();
      if (!arg.ok()) return arg;
      if (arg->op != Expr::Op::kRef) {
        pos_ = start;
        return Error("groups_at_least(measure, dimension, threshold) takes a measure name first");
      }
      if (!Eat(',')) return Error("groups_at_least(measure, dimension, threshold) needs a dimension");
      Skip();
      const size_t ds = pos_;
      while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
      e.name = std::string(s_.substr(ds, pos_ - ds));
      if (e.name.empty()) return Error("expected a dimension name");
      if (!Eat(',')) return Error("groups_at_least(measure, dimension, threshold) needs a threshold");
      Skip();
      const auto* begin = s_.data() + pos_;
      auto [ptr, ec] = std::from_chars(begin, s_.data() + s_.size(), e.num);
      if (ec != std::errc() || !std::isfinite(e.num)) return Error("the threshold must be a number");
      pos_ += static_cast<size_t>(ptr - begin);
      if (!Eat(')')) return Error("expected ')'");
      e.op = Expr::Op::kGroupsAtLeast;
      e.args.push_back(std::move(*arg));
      return e;
    }
    if (name == "min") {
      e.op = Expr::Op::kMin;
    } else if (name == "max") {
      e.op = Expr::Op::kMax;
    } else if (name == "abs") {
      e.op = Expr::Op::kAbs;
      max_args = 1;
    } else if (name == "coalesce") {
      e.op = Expr::Op::kCoalesce;
    } else {
      pos_ = start;
      return Error(fmt::format(
          "unknown function '{}' (known: min, max, abs, coalesce, p50, p90, p95, p99, quantile, groups_at_least)",
          name));
    }
    if (!Eat(')')) {
      do {
        auto arg = ParseSum();
        if (!arg.ok()) return arg;
        e.args.push_back(std::move(*arg));
      } while (Eat(','));
      if (!Eat(')')) return Error("expected ')' or ',' in function call");
    }
    if (e.args.size() < min_args || e.args.size() > max_args) {
      return Error(
          fmt::format("{}() takes {} argument(s), got {}", name, max_args == 1 ? "1" : "1 or more", e.args.size()));
    }
    return e;
  }

  std::string_view s_;
  const NameResolver& resolve_;
  size_t pos_ = 0;
  int depth_ = 0;
};

std::optional<double> Finite(double v) {
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

absl::StatusOr<Expr> ParseExpr(std::string_view text, const NameResolver& resolve) {
  return Parser(text, resolve).Parse();
}

std::optional<double> Eval(const Expr& e, const ValueFn& value) {
  switch (e.op) {
    case Expr::Op::kNum:
      return e.num;
    case Expr::Op::kRef:
      return value(e.ref, -1);
    case Expr::Op::kQuantile:
      return value(e.args[0].ref, e.num);
    case Expr::Op::kGroupsAtLeast:
      return value(e.args[0].ref, -1);
    case Expr::Op::kNeg: {
      auto v = Eval(e.args[0], value);
      if (!v) return std::nullopt;
      return -*v;
    }
    case Expr::Op::kAbs: {
      auto v = Eval(e.args[0], value);
      if (!v) return std::nullopt;
      return std::fabs(*v);
    }
    case Expr::Op::kCoalesce:
      for (const auto& a : e.args) {
        if (auto v = Eval(a, value)) return v;
      }
      return std::nullopt;
    case Expr::Op::kMin:
    case Expr::Op::kMax: {
      std::optional<double> acc;
      for (const auto& a : e.args) {
        auto v = Eval(a, value);
        if (!v) return std::nullopt;
        acc = !acc ? *v : (e.op == Expr::Op::kMin ? std::min(*acc, *v) : std::max(*acc, *v));
      }
      return acc;
    }
    case Expr::Op::kAdd:
    case Expr::Op::kSub:
    case Expr::Op::kMul:
    case Expr::Op::kDiv: {
      auto a = Eval(e.args[0], value);
      auto b = Eval(e.args[1], value);
      if (!a || !b) return std::nullopt;
      switch (e.op) {
        case Expr::Op::kAdd:
          return Finite(*a + *b);
        case Expr::Op::kSub:
          return Finite(*a - *b);
        case Expr::Op::kMul:
          return Finite(*a * *b);
        default:
          if (*b == 0) return std::nullopt;
          return Finite(*a / *b);
      }
    }
  }
  return std::nullopt;
}

void CollectRefs(const Expr& e, std::vector<int>* refs) {
  if (e.op == Expr::Op::kRef && std::find(refs->begin(), refs->end(), e.ref) == refs->end()) {
    refs->push_back(e.ref);
  }
  for (const auto& a : e.args) CollectRefs(a, refs);
}

}  // namespace kpistream::kpi
