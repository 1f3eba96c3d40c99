// A small librdkafka producer for kpigen and the embedded demo.
//
// Thread-safety: Produce/Flush from one thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::gen {

class KafkaSink {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KafkaSink>> Open(
      const std::string& brokers, const std::map<std::string, std::string>& properties = {});
  ~KafkaSink();

  // Creates the topics if they do not exist (already existing is fine).
  [[nodiscard]] absl::Status CreateTopics(const std::vector<std::string>& topics, int partitions);
  // Queues one record; blocks while the local queue is full.
  [[nodiscard]] absl::Status Produce(const std::string& topic, std::string_view key, std::string_view payload);
  // Waits until every queued record is acknowledged.
  [[nodiscard]] absl::Status Flush(int timeout_ms);
  uint64_t delivery_failures() const;

 private:
  struct Rep;
  explicit KafkaSink(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::gen
