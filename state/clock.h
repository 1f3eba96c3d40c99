// The one clock kpid reads: wall time in milliseconds since the Unix epoch.
// Injected everywhere a decision depends on "now" (future-dated events,
// freshness, retention, windows ending now, the alert clock), so tests can
// run on a fake one.
//
// Thread-safety: NowMs() is safe from any thread; FakeClock's setters too.
#pragma once

#include <atomic>
#include <cstdint>

namespace kpistream::state {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
  int64_t NowSeconds() const { return NowMs() / 1000; }
  // The system's real-time clock (std::chrono::system_clock).
  static const Clock& Wall();
};

// A clock that moves only when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_ms) : now_ms_(now_ms) {}
  int64_t NowMs() const override { return now_ms_.load(); }
  void SetMs(int64_t now_ms) { now_ms_.store(now_ms); }
  void AdvanceMs(int64_t delta_ms) { now_ms_.fetch_add(delta_ms); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace kpistream::state
