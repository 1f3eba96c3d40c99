// Which configured input a Kafka topic belongs to. A configured topic is
// either a name or, when it starts with '^', a pattern: a POSIX extended
// regular expression matched against whole topic names, the convention
// librdkafka's rd_kafka_subscribe follows (it compiles '^' entries with
// regcomp as well, so both sides agree on what matches). A pattern makes
// the consumer subscribe to every topic it matches, including topics
// created later: librdkafka notices them at its next metadata refresh
// (topic.metadata.refresh.interval.ms, 5 minutes by default; Kafka
// Streams' metadata.max.age.ms is the same).
//
// Precedence: a topic named exactly wins over any pattern; among patterns
// the first configured that matches wins (kafka.sources in file order,
// then kafka.topics), and neither the dead-letter topic nor Kafka's
// internal topics (names starting with "__") ever match: a pattern such as
// "^.*" would otherwise read kpid's own dead letters back, and
// __consumer_offsets.
//
// Thread-safety: Find is not thread-safe (it caches); the engine calls it
// on its consumer thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::ingest {

struct TopicBinding;

// A '^'-prefixed topic (a pattern) rather than a name.
inline bool IsTopicPattern(std::string_view topic) { return !topic.empty() && topic.front() == '^'; }

// A configured topic's error for the config reader, or nullopt: an empty
// name, a name with characters Kafka refuses (legal: [A-Za-z0-9._-], at
// most 249), or a pattern regcomp refuses (its message quoted).
std::optional<std::string> CheckTopic(std::string_view topic);

// The regular expression (librdkafka's topic.blacklist syntax) matching
// exactly one topic name.
std::string ExactTopicRegex(std::string_view name);

class TopicMatcher {
 public:
  // REQUIRES: bindings outlive the matcher. INVALID_ARGUMENT for a pattern
  // that does not compile. A pattern never matches the dead-letter topic,
  // Kafka's internal topics, nor (group_id given) the group's changelogs
  // "<group_id>.<topic>.changelog".
  static absl::StatusOr<std::unique_ptr<TopicMatcher>> Create(const std::vector<TopicBinding>& bindings,
                                                              std::string dead_letter_topic,
                                                              std::string_view group_id = "");
  ~TopicMatcher();

  // The binding a topic's records are read by; null when none.
  const TopicBinding* Find(const std::string& topic);
  bool has_patterns() const { return !patterns_.empty(); }

 private:
  struct Pattern;
  TopicMatcher() = default;
  std::unordered_map<std::string, const TopicBinding*> exact_;
  std::vector<std::unique_ptr<Pattern>> patterns_;
  std::unordered_map<std::string, const TopicBinding*> matched_;  // cache of pattern lookups (null: none)
  std::string dead_letter_topic_;
  std::string changelog_prefix_;  // "<group>.": changelogs are "<group>.<topic>.changelog"
};

}  // namespace kpistream::ingest
