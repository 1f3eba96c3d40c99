// Measure filters: boolean expressions over an event's fields.
//
//   filter  := or
//   or      := and ('or' and)*
//   and     := not ('and' not)*
//   not     := 'not' not | '(' filter ')' | compare
//   compare := field op literal | field ['not'] 'in' '(' literal (',' literal)* ')'
//   op      := == | != | < | <= | > | >=   (`=` is read as `==`)
//   literal := number | 'text' | "text"
//
// Fields are the family's scalar fields (string, enum, int32, double). The
// enum field `type` compares with type names as in `types:` (e.g. 'click').
// Type errors (a string field against a number, `<` on strings) are found
// when the catalog loads.
//
// Thread-safety: immutable after compilation; Matches() is const.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/event.h"

namespace google::protobuf {
class Message;
class FieldDescriptor;
}  // namespace google::protobuf

namespace kpistream::kpi {

class Filter {
 public:
  // Errors say what is wrong and at which column of the text.
  [[nodiscard]] static absl::StatusOr<Filter> Compile(std::string_view text, Family family);
  Filter();
  ~Filter();
  Filter(Filter&&) noexcept;
  Filter& operator=(Filter&&) noexcept;

  bool Matches(const google::protobuf::Message& msg) const;
  const std::string& text() const { return text_; }

  struct Node;

 private:
  std::string text_;
  std::unique_ptr<Node> root_;
};

}  // namespace kpistream::kpi
