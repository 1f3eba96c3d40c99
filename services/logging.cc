#include "services/logging.h"

#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "absl/time/time.h"

namespace kpistream::services {

namespace {

// {"ts":"2026-11-30T04:41:41.722Z","level":"info","msg":"..."}: the message
// escaped by nlohmann/json (invalid UTF-8 as U+FFFD), one object per line.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::json j;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    j["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
    j["level"] =
        std::string(spdlog::level::to_string_view(msg.level).data(), spdlog::level::to_string_view(msg.level).size());
    j["msg"] = std::string(msg.payload.data(), msg.payload.size());
    const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

absl::Status ConfigureLogging(const std::string& level, const std::string& format) {
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(fmt::format("--log-level {}: use trace, debug, info, warn or error", level));
  }
  spdlog::set_level(lvl);
  // Log lines reach a file or a pipe as they happen (kpid logs little).
  spdlog::flush_on(lvl);
  if (format == "json") {
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
  } else if (format != "text") {
    return absl::InvalidArgumentError(fmt::format("--log-format {}: use text or json", format));
  }
  return absl::OkStatus();
}

}  // namespace kpistream::services
