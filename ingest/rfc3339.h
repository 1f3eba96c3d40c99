// The common spelling of an RFC 3339 date-time, read fast:
//   YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|+HH:MM|-HH:MM)
// (RFC 3339 section 5.6, upper-case T and Z, a four-digit year). Used in
// front of absl::ParseTime(absl::RFC3339_full, ...), which declared
// sources use for RFC 3339 times and which costs a fifth of a nested JSON
// record's decode: its format-driven parser is general (any format, any
// zone). Everything this does not take (lower-case t or z, a leap second,
// more than nine fraction digits, a day the month lacks, any other
// spelling) is left to absl, so for every input it takes it gives what
// absl gives (ingest/tests/rfc3339_test.cc checks so on random inputs).
// Calendar arithmetic is std::chrono's (C++20 civil dates).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kpistream::ingest {

struct UnixTime {
  int64_t seconds = 0;
  int32_t nanos = 0;  // [0, 1e9)
};

// The time, or nullopt when `text` is not in the form above (then ask
// absl::ParseTime). Thread-safe.
std::optional<UnixTime> ParseCommonRfc3339(std::string_view text);

}  // namespace kpistream::ingest
