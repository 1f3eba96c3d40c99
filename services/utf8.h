// Text for wire formats that require UTF-8 (protobuf `string` fields, the
// Prometheus exposition, JSON): dimension values reach kpid as arbitrary
// bytes, and an invalid sequence must not break an answer or a scrape.
// Hand-written because none of the project's libraries exposes it (protobuf
// and nlohmann/json validate internally only); it follows RFC 3629.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace kpistream::services {

// The text with each byte that does not start a well-formed RFC 3629
// sequence (overlong forms, surrogates and values past U+10FFFF included)
// replaced by U+FFFD. Valid text comes back unchanged.
std::string ValidUtf8(std::string_view text);

}  // namespace kpistream::services
