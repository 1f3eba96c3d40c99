// Scripted event stories that make a KPI cross an alert threshold and come
// back, for end-to-end alert tests and demos. A scenario is a fixed,
// time-ordered list of events from a start time; callers emit a slice of it
// by day, so a test can produce it in phases (and wait between them).
//
// Thread-safety: plain functions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gen/generator.h"

namespace kpistream::gen {

// "churn-spike": 1000 subscriptions start on day 0; one cancels every third
// day (monthly logo churn ~1 %); on day 45, 40 more cancel within 20 hours
// (~5 %: ChurnRateSpike goes pending, and fires two days later); by day 76
// the spike has left the 30-day window and the alert resolves. An hourly
// product page view keeps event time moving. Protobuf payloads.
//
// Calls emit(record) for every event with time in [start + from_day,
// start + to_day), in time order. Unknown name: INVALID_ARGUMENT.
[[nodiscard]] absl::Status EmitScenario(std::string_view name, int64_t start_s, double from_day, double to_day,
                                        const std::function<void(const Record&)>& emit);

}  // namespace kpistream::gen
