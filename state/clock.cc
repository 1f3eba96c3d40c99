#include "state/clock.h"

#include <chrono>

namespace kpistream::state {

namespace {
class WallClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

const Clock& Clock::Wall() {
  static const WallClock wall;
  return wall;
}

}  // namespace kpistream::state
