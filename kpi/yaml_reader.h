// The one YAML reader of kpistream's configuration files (the KPI file and
// kpid.yaml): typed accessors that record an error with the file, line and
// column of the offending node instead of stopping, so a file's every error
// is reported at once, and unknown keys are errors at every level.
//
// Error lines read "file:line:col: what is wrong and what to write
// instead"; Result() joins them, one per line, as INVALID_ARGUMENT.
//
// Thread-safety: not thread-safe; one reader per file being read.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::kpi {

class YamlReader {
 public:
  explicit YamlReader(std::string filename) : file_(std::move(filename)) {}

  // Parses a document. A syntax error is returned at once (nothing else can
  // be read), with its place.
  [[nodiscard]] absl::StatusOr<YAML::Node> Load(std::string_view text) const;
  // Reads the file at `path` (NOT_FOUND if it cannot be opened).
  [[nodiscard]] static absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view what);

  // Runs fn, turning the exceptions yaml-cpp throws from accessors on
  // malformed documents (a list used as a map key, ...) into an error with
  // their place. Returns Result().
  [[nodiscard]] absl::Status Run(const std::function<void()>& fn);

  const std::string& file() const { return file_; }
  std::string Where(const YAML::Node& n) const;
  void AddError(const YAML::Node& n, std::string_view what);
  size_t ErrorCount() const { return errors_.size(); }
  // OK, or every error recorded, one per line.
  absl::Status Result() const;

  // Letters, digits and '_', not starting with a digit.
  static bool ValidName(std::string_view s);
  // Errors for each key of the map `def` not in `known`, listing them, and
  // for each key given twice (CheckUnique).
  void CheckKeys(const YAML::Node& def, std::initializer_list<std::string_view> known);
  // Errors for each key a map gives twice: yaml-cpp keeps both and reads
  // the first, so the second would be dropped without a word.
  void CheckUnique(const YAML::Node& map);
  // A scalar under parent[key]; nullopt (and an error when required, or
  // when it is not a single value) otherwise.
  std::optional<std::string> Scalar(const YAML::Node& parent, const char* key, bool required);
  // A list of scalars under parent[key], each with its node.
  std::vector<std::pair<std::string, YAML::Node>> List(const YAML::Node& parent, const char* key);
  // A map of names to single values under parent[key].
  std::vector<std::pair<std::string, std::string>> StringMap(const YAML::Node& parent, const char* key);
  // Durations (kpi/window.h): seconds, zero allowed or not, or milliseconds.
  std::optional<int64_t> Duration(const YAML::Node& parent, const char* key, bool required, bool zero_ok = false);
  std::optional<int64_t> DurationMs(const YAML::Node& parent, const char* key);
  // A whole number in [lo, hi].
  std::optional<int64_t> Int(const YAML::Node& parent, const char* key, int64_t lo, int64_t hi);
  // A finite number.
  std::optional<double> Number(const YAML::Node& parent, const char* key);
  // true / false.
  std::optional<bool> Bool(const YAML::Node& parent, const char* key);
  // One of the choices.
  std::optional<std::string> OneOf(const YAML::Node& parent, const char* key,
                                   std::initializer_list<std::string_view> choices);

 private:
  std::string file_;
  std::vector<std::string> errors_;
};

}  // namespace kpistream::kpi
