#include "ingest/high_watermarks.h"

#include <algorithm>

namespace kpistream::ingest {

HighWatermarkProbe::HighWatermarkProbe(rd_kafka_t* consumer, int64_t interval_ms)
    : consumer_(consumer), interval_ms_(interval_ms), thread_([this] { Run(); }) {}

HighWatermarkProbe::~HighWatermarkProbe() { Stop(); }

void HighWatermarkProbe::SetPartitions(std::vector<TopicPartition> partitions) {
  std::lock_guard<std::mutex> l(mu_);
  std::sort(partitions.begin(), partitions.end());
  std::erase_if(probed_,
                [&](const auto& e) { return !std::binary_search(partitions.begin(), partitions.end(), e.first); });
  partitions_ = std::move(partitions);
}

std::map<TopicPartition, int64_t> HighWatermarkProbe::Probed() const {
  std::lock_guard<std::mutex> l(mu_);
  return probed_;
}

void HighWatermarkProbe::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HighWatermarkProbe::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    const auto partitions = partitions_;
    l.unlock();
    for (const auto& tp : partitions) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(consumer_, tp.topic.c_str(), tp.partition, &lo, &hi, 2000) ==
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::lock_guard<std::mutex> g(mu_);
        // Asked about still (SetPartitions may have dropped it meanwhile).
        if (std::binary_search(partitions_.begin(), partitions_.end(), tp)) probed_[tp] = hi;
      }
    }
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(interval_ms_), [this] { return stop_; });
  }
}

}  // namespace kpistream::ingest
