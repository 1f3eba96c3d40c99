#include "kpi/filter.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace kpistream::kpi {

namespace pb = google::protobuf;

struct Filter::Node {
  enum class Kind { kAnd, kOr, kNot, kCmp, kIn };
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe };
  Kind kind = Kind::kCmp;
  Op op = Op::kEq;
  bool negate_in = false;
  const pb::FieldDescriptor* field = nullptr;
  bool numeric = false;  // compare as number (int32/double) or as text
  bool is_enum = false;  // text literals were resolved to enum numbers
  double num = 0;
  std::string str;
  std::vector<double> nums;
  std::vector<std::string> strs;
  std::vector<std::unique_ptr<Node>> kids;
};

namespace {

using Node = Filter::Node;

bool IsNumeric(const pb::FieldDescriptor* f) {
  return f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE || f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32;
}

std::string LowerTypeName(const pb::EnumValueDescriptor* v, Family family) {
  std::string n = v->name();
  const auto prefix = TypePrefix(family);
  if (n.compare(0, prefix.size(), prefix) == 0) n = n.substr(prefix.size());
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return n;
}

class Parser {
 public:
  Parser(std::string_view s, Family f) : s_(s), family_(f), desc_(FamilyDescriptor(f)) {}

  absl::StatusOr<std::unique_ptr<Node>> Parse() {
    auto n = ParseOr();
    if (!n.ok()) return n;
    Skip();
    if (pos_ != s_.size()) return Error(fmt::format("unexpected '{}'", s_.substr(pos_, 10)));
    return n;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(fmt::format("filter \"{}\": {} at column {}", s_, what, pos_ + 1));
  }
  void Skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Word(std::string_view w) {
    Skip();
    if (s_.substr(pos_, w.size()) != w) return false;
    const size_t end = pos_ + w.size();
    if (end < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '_')) return false;
    pos_ = end;
    return true;
  }
  bool Sym(std::string_view sym) {
    Skip();
    if (s_.substr(pos_, sym.size()) != sym) return false;
    pos_ += sym.size();
    return true;
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseOr() {
    auto lhs = ParseAnd();
    if (!lhs.ok()) return lhs;
    while (Word("or")) {
      auto rhs = ParseAnd();
      if (!rhs.ok()) return rhs;
      auto n = std::make_unique<Node>();
      n->kind = Node::Kind::kOr;
      n->kids.push_back(std::move(*lhs));
      n->kids.push_back(std::move(*rhs));
      lhs = std::move(n);
    }
    return lhs;
  }
  absl::StatusOr<std::unique_ptr<Node>> ParseAnd() {
    auto lhs = ParseNot();
    if (!lhs.ok()) return lhs;
    while (Word("and")) {
      auto rhs = ParseNot();
      if (!rhs.ok()) return rhs;
      auto n = std::make_unique<Node>();
      n->kind = Node::Kind::kAnd;
      n->kids.push_back(std::move(*lhs));
      n->kids.push_back(std::move(*rhs));
      lhs = std::move(n);
    }
    return lhs;
  }
  absl::StatusOr<std::unique_ptr<Node>> ParseNot() {
    if (++depth_ > 64) return Error("filter nested too deeply");
    struct Guard {
      int* d;
      ~Guard() { --*d; }
    } g{&depth_};
    if (Word("not")) {
      auto inner = ParseNot();
      if (!inner.ok()) return inner;
      auto n = std::make_unique<Node>();
      n->kind = Node::Kind::kNot;
      n->kids.push_back(std::move(*inner));
      return n;
    }
    if (Sym("(")) {
      auto inner = ParseOr();
      if (!inner.ok()) return inner;
      if (!Sym(")")) return Error("expected ')'");
      return inner;
    }
    return ParseCompare();
  }

  struct Literal {
    bool is_num = false;
    double num = 0;
    std::string str;
    size_t at = 0;
  };
  absl::StatusOr<Literal> ParseLiteral() {
    Skip();
    Literal lit;
    lit.at = pos_;
    if (pos_ >= s_.size()) return Error("expected a number or a 'quoted' text but the filter ended");
    const char c = s_[pos_];
    if (c == '\'' || c == '"') {
      const size_t close = s_.find(c, pos_ + 1);
      if (close == std::string_view::npos) return Error("unterminated text literal");
      lit.str = std::string(s_.substr(pos_ + 1, close - pos_ - 1));
      pos_ = close + 1;
      return lit;
    }
    const char* begin = s_.data() + pos_;
    auto [ptr, ec] = std::from_chars(begin, s_.data() + s_.size(), lit.num);
    if (ec != std::errc() || !std::isfinite(lit.num)) return Error("expected a number or a 'quoted' text");
    lit.is_num = true;
    pos_ += static_cast<size_t>(ptr - begin);
    return lit;
  }

  absl::Status CheckLiteral(Node& n, Literal* lit) {
    if (n.numeric && !lit->is_num) {
      pos_ = lit->at;
      return Error(fmt::format("type mismatch: field '{}' is a number, '{}' is text", n.field->name(), lit->str));
    }
    if (!n.numeric && lit->is_num) {
      pos_ = lit->at;
      return Error(
          fmt::format("type mismatch: field '{}' is text; quote the value, e.g. '{}'", n.field->name(), lit->num));
    }
    if (n.field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
      std::string known;
      for (int i = 1; i < n.field->enum_type()->value_count(); ++i) {
        const auto name = LowerTypeName(n.field->enum_type()->value(i), family_);
        if (name == lit->str) {
          n.is_enum = true;
          lit->num = n.field->enum_type()->value(i)->number();
          return absl::OkStatus();
        }
        known += (known.empty() ? "" : ", ") + name;
      }
      pos_ = lit->at;
      return Error(fmt::format("unknown {} type '{}' (known: {})", FamilyName(family_), lit->str, known));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Node>> ParseCompare() {
    Skip();
    const size_t start = pos_;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    const std::string name(s_.substr(start, pos_ - start));
    if (name.empty()) return Error("expected a field name");
    auto n = std::make_unique<Node>();
    n->field = desc_->FindFieldByName(name);
    if (!n->field || n->field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE || n->field->is_repeated()) {
      pos_ = start;
      std::string known;
      for (int i = 0; i < desc_->field_count(); ++i) {
        if (desc_->field(i)->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) {
          known += (known.empty() ? "" : ", ") + desc_->field(i)->name();
        }
      }
      return Error(fmt::format("unknown field '{}' of {} events (fields: {})", name, FamilyName(family_), known));
    }
    n->numeric = IsNumeric(n->field);
    const bool negate = Word("not");
    if (Word("in")) {
      n->kind = Node::Kind::kIn;
      n->negate_in = negate;
      if (!Sym("(")) return Error("expected '(' after in");
      do {
        auto lit = ParseLiteral();
        if (!lit.ok()) return lit.status();
        if (auto st = CheckLiteral(*n, &*lit); !st.ok()) return st;
        if (lit->is_num || n->is_enum) {
          n->nums.push_back(lit->num);
        } else {
          n->strs.push_back(lit->str);
        }
      } while (Sym(","));
      if (!Sym(")")) return Error("expected ')' or ',' in the in-list");
      return n;
    }
    if (negate) return Error("expected 'in' after 'not'");
    static constexpr std::pair<std::string_view, Node::Op> kOps[] = {
        {"==", Node::Op::kEq}, {"!=", Node::Op::kNe}, {"<=", Node::Op::kLe}, {">=", Node::Op::kGe},
        {"<", Node::Op::kLt},  {">", Node::Op::kGt},  {"=", Node::Op::kEq}};
    bool found = false;
    for (const auto& [sym, op] : kOps) {
      if (Sym(sym)) {
        n->op = op;
        found = true;
        break;
      }
    }
    if (!found) return Error(fmt::format("expected a comparison (==, !=, <, <=, >, >=) or 'in' after '{}'", name));
    auto lit = ParseLiteral();
    if (!lit.ok()) return lit.status();
    if (auto st = CheckLiteral(*n, &*lit); !st.ok()) return st;
    if (!n->numeric && n->op != Node::Op::kEq && n->op != Node::Op::kNe) {
      pos_ = lit->at;
      return Error(fmt::format("text field '{}' supports only == and != (and in)", name));
    }
    n->num = lit->num;
    n->str = lit->str;
    return n;
  }

  std::string_view s_;
  Family family_;
  const pb::Descriptor* desc_;
  size_t pos_ = 0;
  int depth_ = 0;
};

bool Eval(const Node& n, const pb::Message& msg) {
  switch (n.kind) {
    case Node::Kind::kAnd:
      return Eval(*n.kids[0], msg) && Eval(*n.kids[1], msg);
    case Node::Kind::kOr:
      return Eval(*n.kids[0], msg) || Eval(*n.kids[1], msg);
    case Node::Kind::kNot:
      return !Eval(*n.kids[0], msg);
    case Node::Kind::kCmp:
    case Node::Kind::kIn:
      break;
  }
  const auto* r = msg.GetReflection();
  if (n.numeric || n.is_enum) {
    const double v = n.is_enum                                                   ? r->GetEnumValue(msg, n.field)
                     : n.field->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32 ? r->GetInt32(msg, n.field)
                                                                                 : r->GetDouble(msg, n.field);
    if (n.kind == Node::Kind::kIn) {
      return (std::find(n.nums.begin(), n.nums.end(), v) != n.nums.end()) != n.negate_in;
    }
    switch (n.op) {
      case Node::Op::kEq:
        return v == n.num;
      case Node::Op::kNe:
        return v != n.num;
      case Node::Op::kLt:
        return v < n.num;
      case Node::Op::kLe:
        return v <= n.num;
      case Node::Op::kGt:
        return v > n.num;
      case Node::Op::kGe:
        return v >= n.num;
    }
    return false;
  }
  std::string scratch;
  const std::string_view v = r->GetStringReference(msg, n.field, &scratch);
  if (n.kind == Node::Kind::kIn) {
    return (std::find(n.strs.begin(), n.strs.end(), v) != n.strs.end()) != n.negate_in;
  }
  return (v == n.str) == (n.op == Node::Op::kEq);
}

}  // namespace

Filter::Filter() = default;
Filter::~Filter() = default;
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;

absl::StatusOr<Filter> Filter::Compile(std::string_view text, Family family) {
  auto root = Parser(text, family).Parse();
  if (!root.ok()) return root.status();
  Filter f;
  f.text_ = std::string(text);
  f.root_ = std::move(*root);
  return f;
}

bool Filter::Matches(const pb::Message& msg) const { return !root_ || Eval(*root_, msg); }

}  // namespace kpistream::kpi
