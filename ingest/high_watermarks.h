// High watermarks (Kafka's: the offset after the last record of a
// partition) asked of the partition leaders on a helper thread, every
// interval. librdkafka's cached watermarks are refreshed only by fetch
// responses, and a partition its shared queue keeps unfetched goes stale
// (docs/RELIABILITY.md, "caught up too early"): lag must come from here.
//
// Thread-safety: SetPartitions, Probed and Stop from the engine's consumer
// thread; the queries run on the probe's own thread.
#pragma once

#include <librdkafka/rdkafka.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "ingest/engine.h"

namespace kpistream::ingest {

class HighWatermarkProbe {
 public:
  // Starts the thread. REQUIRES: consumer outlives Stop().
  HighWatermarkProbe(rd_kafka_t* consumer, int64_t interval_ms);
  ~HighWatermarkProbe();  // Stop()
  HighWatermarkProbe(const HighWatermarkProbe&) = delete;
  HighWatermarkProbe& operator=(const HighWatermarkProbe&) = delete;

  // The partitions to ask about (the ones owned); forgets the others.
  void SetPartitions(std::vector<TopicPartition> partitions);
  // The latest answer for each partition asked about (absent until the
  // leader first answered).
  std::map<TopicPartition, int64_t> Probed() const;
  // Joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  rd_kafka_t* consumer_;
  const int64_t interval_ms_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<TopicPartition> partitions_ ABSL_GUARDED_BY(mu_);
  std::map<TopicPartition, int64_t> probed_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace kpistream::ingest
