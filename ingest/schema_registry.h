// A client of a schema registry's Confluent-compatible REST API (Confluent
// Schema Registry, Apicurio Registry's /apis/ccompat/v7, Redpanda, Karapace):
// the writer schemas of records in the Confluent wire format, fetched by id,
// cached, and fetched again only for ids not seen before.
//
// The wire format (Confluent's "Wire format" documentation): byte 0 is the
// magic byte 0, bytes 1-4 the schema id (big-endian, signed 32-bit), then
// the payload in the schema's encoding (Avro binary, protobuf with message
// indexes, or JSON).
//
// Thread-safety: every method is thread-safe. Lookups of cached ids take a
// shared lock only; a fetch holds no lock while it waits on the network.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kpistream::ingest {

// A schema as the registry holds it.
struct RegisteredSchema {
  int32_t id = 0;
  std::string type = "AVRO";  // schemaType: AVRO (the API's default when absent), PROTOBUF or JSON
  std::string text;           // the schema itself (Avro JSON, .proto text or JSON Schema)
};

struct SchemaRegistryOptions {
  std::string url;                 // base URL, e.g. http://registry:8081 or http://h:8080/apis/ccompat/v7
  std::string username, password;  // basic auth, when set
  std::string ca_file;             // CA bundle for an https URL (default: the system's)
  int64_t timeout_ms = 5000;       // per request
  // After a failed fetch (no answer, or a 5xx), the same id is not asked
  // for again before this much time; doubled per failure up to the max.
  int64_t initial_backoff_ms = 200;
  int64_t max_backoff_ms = 10000;
  // A "no schema has this id" answer is believed only once it persists this
  // long (a follower may not have a just-registered schema yet).
  int64_t not_found_grace_ms = 10000;
};

// The URL without the user and password a user:password@ part holds, for
// messages and logs.
std::string RedactedUrl(const std::string& url);

// Splits a record in the Confluent wire format: its schema id and the rest.
// INVALID_ARGUMENT when it is shorter than 5 bytes or byte 0 is not 0.
absl::StatusOr<std::pair<int32_t, std::string_view>> SplitConfluentFrame(std::string_view record);

class SchemaRegistryClient {
 public:
  explicit SchemaRegistryClient(SchemaRegistryOptions options);

  // The schema with this id:
  //   NOT_FOUND    the registry answered that no schema has the id (404
  //                with error_code 40403) for longer than
  //                not_found_grace_ms, or id <= 0; asked again after
  //                max_backoff_ms
  //   UNAVAILABLE  no answer, a 5xx, another 404, an answer that is not the
  //                API's JSON, or "not found" within the grace: retry later
  //                (the caller must not skip the record); within the
  //                backoff after a failure this returns at once
  // Blocks for at most timeout_ms.
  absl::StatusOr<std::shared_ptr<const RegisteredSchema>> Lookup(int32_t id);

  // Registers `schema` under `subject` (POST /subjects/{subject}/versions),
  // as producers' serializers do; the id the registry gives it (the same id
  // again for a schema it already has). For tools and tests: kpid only
  // reads.
  absl::StatusOr<int32_t> Register(const std::string& subject, const std::string& schema,
                                   const std::string& type = "AVRO");

  // Fetches made (answered or not) and failed, for metrics.
  int64_t fetches() const;
  int64_t failures() const;
  const SchemaRegistryOptions& options() const { return options_; }

 private:
  struct Failure {
    std::chrono::steady_clock::time_point retry_at;
    int64_t backoff_ms = 0;
    absl::Status status;
    std::optional<std::chrono::steady_clock::time_point> not_found_since;
  };
  absl::StatusOr<std::shared_ptr<const RegisteredSchema>> Fetch(int32_t id);
  // One request; the status code and body, or UNAVAILABLE with no answer.
  absl::StatusOr<std::pair<long, std::string>> Request(const std::string& path, const std::string* post_body);

  const SchemaRegistryOptions options_;
  mutable std::shared_mutex mu_;
  std::map<int32_t, std::shared_ptr<const RegisteredSchema>> cache_;
  std::map<int32_t, Failure> failures_;
  size_t prune_at_ = 10000;  // failures_ is pruned when it grows past this
  int32_t max_found_id_ = 0;
  std::chrono::steady_clock::time_point grace_spent_until_{};
  int64_t fetches_ = 0, failed_ = 0;
};

}  // namespace kpistream::ingest
