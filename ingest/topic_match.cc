#include "ingest/topic_match.h"

#include <regex.h>

#include <algorithm>

#include "fmt/format.h"
#include "ingest/engine.h"

namespace kpistream::ingest {

namespace {

// Kafka's own limit (org.apache.kafka.common.internals.Topic).
constexpr size_t kMaxTopicLength = 249;

bool LegalTopicChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

}  // namespace

struct TopicMatcher::Pattern {
  regex_t re{};
  bool compiled = false;
  const TopicBinding* binding = nullptr;
  ~Pattern() {
    if (compiled) regfree(&re);
  }
};

// Compiles like librdkafka's rd_regex_comp (REG_EXTENDED | REG_NOSUB);
// the error text or nullopt.
static std::optional<std::string> Compile(const std::string& pattern, regex_t* re) {
  const int rc = regcomp(re, pattern.c_str(), REG_EXTENDED | REG_NOSUB);
  if (rc == 0) return std::nullopt;
  char msg[256];
  regerror(rc, re, msg, sizeof(msg));
  return std::string(msg);
}

std::optional<std::string> CheckTopic(std::string_view topic) {
  if (topic.empty()) return "a topic must not be empty";
  if (IsTopicPattern(topic)) {
    regex_t re;
    auto err = Compile(std::string(topic), &re);
    if (err) return fmt::format("topic pattern {} is not a POSIX extended regular expression: {}", topic, *err);
    regfree(&re);
    return std::nullopt;
  }
  if (topic.size() > kMaxTopicLength) return fmt::format("topic names are at most {} characters", kMaxTopicLength);
  if (topic == "." || topic == "..") return fmt::format("'{}' is not a legal topic name", topic);
  if (!std::all_of(topic.begin(), topic.end(), LegalTopicChar)) {
    return fmt::format(
        "topic '{}' has a character Kafka refuses (legal: letters, digits, '.', '_', '-'); a pattern starts with '^'",
        topic);
  }
  return std::nullopt;
}

std::string ExactTopicRegex(std::string_view name) {
  std::string r = "^";
  for (const char c : name) {
    if (c == '.') r += '\\';
    r += c;
  }
  return r + "$";
}

absl::StatusOr<std::unique_ptr<TopicMatcher>> TopicMatcher::Create(const std::vector<TopicBinding>& bindings,
                                                                   std::string dead_letter_topic,
                                                                   std::string_view group_id) {
  std::unique_ptr<TopicMatcher> m(new TopicMatcher());
  m->dead_letter_topic_ = std::move(dead_letter_topic);
  if (!group_id.empty()) m->changelog_prefix_ = std::string(group_id) + ".";
  for (const auto& b : bindings) {
    if (!IsTopicPattern(b.topic)) {
      m->exact_.emplace(b.topic, &b);
      continue;
    }
    auto p = std::make_unique<Pattern>();
    if (auto err = Compile(b.topic, &p->re)) {
      return absl::InvalidArgumentError(fmt::format("topic pattern {}: {}", b.topic, *err));
    }
    p->compiled = true;
    p->binding = &b;
    m->patterns_.push_back(std::move(p));
  }
  return m;
}

TopicMatcher::~TopicMatcher() = default;

const TopicBinding* TopicMatcher::Find(const std::string& topic) {
  if (auto it = exact_.find(topic); it != exact_.end()) return it->second;
  // Kafka's internal topics (__consumer_offsets, __transaction_state, ...)
  // are never an input by pattern.
  if (patterns_.empty() || topic == dead_letter_topic_ || topic.starts_with("__")) return nullptr;
  // Nor kpid's own changelogs (ingest/changelog.h).
  if (!changelog_prefix_.empty() && topic.starts_with(changelog_prefix_) && topic.ends_with(".changelog")) {
    return nullptr;
  }
  if (auto it = matched_.find(topic); it != matched_.end()) return it->second;
  const TopicBinding* found = nullptr;
  for (const auto& p : patterns_) {
    if (regexec(&p->re, topic.c_str(), 0, nullptr, 0) == 0) {
      found = p->binding;
      break;
    }
  }
  matched_.emplace(topic, found);
  return found;
}

}  // namespace kpistream::ingest
