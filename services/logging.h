// One logger for everything kpid prints: spdlog, as text or as JSON objects
// one per line (for log collectors); librdkafka's own log lines go through
// it too (ingest/engine.cc routes them).
//
// Thread-safety: call ConfigureLogging once, before other threads start.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kpistream::services {

// level: trace | debug | info | warn | error; format: text | json.
// INVALID_ARGUMENT for anything else.
[[nodiscard]] absl::Status ConfigureLogging(const std::string& level, const std::string& format);

}  // namespace kpistream::services
