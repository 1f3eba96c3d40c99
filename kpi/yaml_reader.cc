#include "kpi/yaml_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "kpi/window.h"

namespace kpistream::kpi {

absl::StatusOr<YAML::Node> YamlReader::Load(std::string_view text) const {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}:{}:{}: YAML syntax error: {}", file_, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

absl::StatusOr<std::string> YamlReader::ReadFile(const std::string& path, std::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open the {}", path, what));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status YamlReader::Run(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const YAML::Exception& e) {
    errors_.push_back(fmt::format("{}:{}:{}: {} (expected a name or a single value here)", file_, e.mark.line + 1,
                                  e.mark.column + 1, e.msg));
  } catch (const std::exception& e) {
    errors_.push_back(fmt::format("{}: {}", file_, e.what()));
  }
  return Result();
}

std::string YamlReader::Where(const YAML::Node& n) const {
  const auto m = n.Mark();
  if (m.is_null()) return file_;
  return fmt::format("{}:{}:{}", file_, m.line + 1, m.column + 1);
}

void YamlReader::AddError(const YAML::Node& n, std::string_view what) {
  errors_.push_back(fmt::format("{}: {}", Where(n), what));
}

absl::Status YamlReader::Result() const {
  if (errors_.empty()) return absl::OkStatus();
  std::string all;
  for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
  return absl::InvalidArgumentError(all);
}

bool YamlReader::ValidName(std::string_view s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

void YamlReader::CheckKeys(const YAML::Node& def, std::initializer_list<std::string_view> known) {
  if (!def.IsMap()) return;
  CheckUnique(def);
  for (auto it = def.begin(); it != def.end(); ++it) {
    const auto k = it->first.IsScalar() ? it->first.as<std::string>() : std::string("?");
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      std::string list;
      for (auto s : known) list += (list.empty() ? "" : ", ") + std::string(s);
      AddError(it->first, fmt::format("unknown key '{}' (known: {})", k, list));
    }
  }
}

void YamlReader::CheckUnique(const YAML::Node& map) {
  if (!map.IsMap()) return;
  std::map<std::string, int> seen;  // key -> line of its first use
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const auto k = it->first.as<std::string>();
    if (const auto [first, fresh] = seen.emplace(k, it->first.Mark().line + 1); !fresh) {
      AddError(it->first, fmt::format("duplicate key '{}' (first at line {}); give each key once", k, first->second));
    }
  }
}

std::optional<std::string> YamlReader::Scalar(const YAML::Node& parent, const char* key, bool required) {
  const auto n = parent[key];
  if (!n) {
    if (required) AddError(parent, fmt::format("missing required key '{}'", key));
    return std::nullopt;
  }
  if (!n.IsScalar()) {
    AddError(n, fmt::format("'{}' must be a single value", key));
    return std::nullopt;
  }
  return n.as<std::string>();
}

std::vector<std::pair<std::string, YAML::Node>> YamlReader::List(const YAML::Node& parent, const char* key) {
  std::vector<std::pair<std::string, YAML::Node>> out;
  const auto n = parent[key];
  if (!n) return out;
  if (!n.IsSequence()) {
    AddError(n, fmt::format("'{}' must be a list, e.g. [a, b]", key));
    return out;
  }
  for (const auto& item : n) {
    if (!item.IsScalar()) {
      AddError(item, fmt::format("items of '{}' must be single values", key));
      continue;
    }
    out.emplace_back(item.as<std::string>(), item);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> YamlReader::StringMap(const YAML::Node& parent, const char* key) {
  std::vector<std::pair<std::string, std::string>> out;
  const auto m = parent[key];
  if (!m) return out;
  if (!m.IsMap()) {
    AddError(m, fmt::format("'{}' must be a map of name to value", key));
    return out;
  }
  CheckUnique(m);
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it->first.IsScalar() || !it->second.IsScalar()) {
      AddError(it->first, fmt::format("entries of '{}' must be a name and a single value", key));
      continue;
    }
    out.emplace_back(it->first.as<std::string>(), it->second.as<std::string>());
  }
  return out;
}

std::optional<int64_t> YamlReader::Duration(const YAML::Node& parent, const char* key, bool required, bool zero_ok) {
  const auto v = Scalar(parent, key, required);
  if (!v) return std::nullopt;
  auto secs = zero_ok ? ParseDurationOrZero(*v) : ParseDuration(*v);
  if (!secs.ok()) {
    AddError(parent[key], fmt::format("{}: {}", key, std::string(secs.status().message())));
    return std::nullopt;
  }
  return *secs;
}

std::optional<int64_t> YamlReader::DurationMs(const YAML::Node& parent, const char* key) {
  const auto v = Scalar(parent, key, false);
  if (!v) return std::nullopt;
  auto ms = ParseDurationMs(*v);
  if (!ms.ok()) {
    AddError(parent[key], fmt::format("{}: {}", key, std::string(ms.status().message())));
    return std::nullopt;
  }
  return *ms;
}

std::optional<int64_t> YamlReader::Int(const YAML::Node& parent, const char* key, int64_t lo, int64_t hi) {
  const auto v = Scalar(parent, key, false);
  if (!v) return std::nullopt;
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || ptr != v->data() + v->size() || n < lo || n > hi) {
    AddError(parent[key], fmt::format("{} '{}' must be a whole number from {} to {}", key, *v, lo, hi));
    return std::nullopt;
  }
  return n;
}

std::optional<double> YamlReader::Number(const YAML::Node& parent, const char* key) {
  const auto v = Scalar(parent, key, false);
  if (!v) return std::nullopt;
  double d = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
  if (ec != std::errc() || ptr != v->data() + v->size() || !std::isfinite(d)) {
    AddError(parent[key], fmt::format("{} '{}' must be a number", key, *v));
    return std::nullopt;
  }
  return d;
}

std::optional<bool> YamlReader::Bool(const YAML::Node& parent, const char* key) {
  const auto v = Scalar(parent, key, false);
  if (!v) return std::nullopt;
  if (*v == "true") return true;
  if (*v == "false") return false;
  AddError(parent[key], fmt::format("{} '{}' must be true or false", key, *v));
  return std::nullopt;
}

std::optional<std::string> YamlReader::OneOf(const YAML::Node& parent, const char* key,
                                             std::initializer_list<std::string_view> choices) {
  const auto v = Scalar(parent, key, false);
  if (!v) return std::nullopt;
  if (std::find(choices.begin(), choices.end(), *v) != choices.end()) return v;
  std::string list;
  for (auto c : choices) list += (list.empty() ? "" : ", ") + std::string(c);
  AddError(parent[key], fmt::format("{} '{}' must be one of: {}", key, *v, list));
  return std::nullopt;
}

}  // namespace kpistream::kpi
