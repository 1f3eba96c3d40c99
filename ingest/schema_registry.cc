#include "ingest/schema_registry.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <simdjson.h>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace kpistream::ingest {

std::string RedactedUrl(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  // The authority ends at the path, query or fragment; its userinfo ends at
  // its last '@' (a password may hold '@' or '/').
  const size_t end = std::min(url.size(), url.find_first_of("?#", start));
  const size_t at = url.rfind('@', end == 0 ? 0 : end - 1);
  if (at == std::string::npos || at < start) return url;
  return url.substr(0, start) + "***@" + url.substr(at + 1);
}

absl::StatusOr<std::pair<int32_t, std::string_view>> SplitConfluentFrame(std::string_view record) {
  if (record.size() < 5) {
    return absl::InvalidArgumentError(fmt::format(
        "{} bytes, too short for the Confluent wire format (magic byte and 4-byte schema id)", record.size()));
  }
  if (record[0] != 0) {
    return absl::InvalidArgumentError(
        fmt::format("magic byte is {}, want 0 (the Confluent wire format)", static_cast<uint8_t>(record[0])));
  }
  const auto b = [&](int i) { return static_cast<uint32_t>(static_cast<uint8_t>(record[i])); };
  const uint32_t id = (b(1) << 24) | (b(2) << 16) | (b(3) << 8) | b(4);
  return std::make_pair(static_cast<int32_t>(id), record.substr(5));
}

SchemaRegistryClient::SchemaRegistryClient(SchemaRegistryOptions options) : options_(std::move(options)) {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)init;
}

int64_t SchemaRegistryClient::fetches() const {
  std::shared_lock lock(mu_);
  return fetches_;
}

int64_t SchemaRegistryClient::failures() const {
  std::shared_lock lock(mu_);
  return failed_;
}

absl::StatusOr<std::shared_ptr<const RegisteredSchema>> SchemaRegistryClient::Lookup(int32_t id) {
  if (id <= 0) return absl::NotFoundError(fmt::format("schema id {}: registries number schemas from 1", id));
  const auto now = std::chrono::steady_clock::now();
  Failure previous;
  {
    std::shared_lock lock(mu_);
    if (auto it = cache_.find(id); it != cache_.end()) return it->second;
    if (auto it = failures_.find(id); it != failures_.end()) {
      if (now < it->second.retry_at) return it->second.status;
      previous = it->second;
    }
  }
  auto got = Fetch(id);
  std::unique_lock lock(mu_);
  ++fetches_;
  if (got.ok()) {
    failures_.erase(id);
    max_found_id_ = std::max(max_found_id_, id);
    return cache_.emplace(id, *got).first->second;
  }
  ++failed_;
  const auto at = std::chrono::steady_clock::now();
  // Garbage ids must not grow the table without bound: forget failures
  // whose retry time has passed (they are asked again anyway).
  if (failures_.size() > prune_at_) {
    for (auto it = failures_.begin(); it != failures_.end();) {
      const bool in_grace = it->second.not_found_since &&
                            at - *it->second.not_found_since < std::chrono::milliseconds(options_.not_found_grace_ms);
      it = it->second.retry_at < at && !in_grace ? failures_.erase(it) : std::next(it);
    }
    prune_at_ = std::max<size_t>(10000, failures_.size() * 2);
  }
  Failure f;
  f.backoff_ms = std::min(options_.max_backoff_ms,
                          previous.backoff_ms == 0 ? options_.initial_backoff_ms : previous.backoff_ms * 2);
  f.status = got.status();
  if (absl::IsNotFound(got.status())) {
    // A schema registered a moment ago may not be on the instance asked yet
    // (followers read the registry's log): "not found" is believed only
    // after it persists for not_found_grace_ms; until then the record waits.
    // Not for an id below one the registry served (ids only grow, so it
    // cannot be a new one), nor right after a grace ran out for another id
    // (a stream of unknown ids would each stall their partition).
    f.not_found_since = previous.not_found_since.value_or(at);
    const bool may_be_new = id > max_found_id_ && at >= grace_spent_until_;
    if (may_be_new && at - *f.not_found_since < std::chrono::milliseconds(options_.not_found_grace_ms)) {
      f.status =
          absl::UnavailableError(fmt::format("{} (yet; asked again until {} s after the first answer)",
                                             std::string(got.status().message()), options_.not_found_grace_ms / 1000));
    } else {
      f.backoff_ms = options_.max_backoff_ms;
      if (may_be_new) grace_spent_until_ = at + std::chrono::milliseconds(6 * options_.not_found_grace_ms);
    }
  }
  f.retry_at = at + std::chrono::milliseconds(f.backoff_ms);
  failures_[id] = f;
  return f.status;
}

namespace {

size_t Append(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  // A schema is kilobytes; an endless answer is refused, not buffered.
  if (body->size() + size * n > (size_t{16} << 20)) return 0;
  body->append(data, size * n);
  return size * n;
}

}  // namespace

absl::StatusOr<std::pair<long, std::string>> SchemaRegistryClient::Request(const std::string& path,
                                                                           const std::string* post_body) {
  std::string base = options_.url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  const std::string url = base + path;
  CURL* c = curl_easy_init();
  if (c == nullptr) return absl::UnavailableError("curl_easy_init failed");
  std::string body;
  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/vnd.schemaregistry.v1+json, application/json");
  if (post_body != nullptr) {
    headers = curl_slist_append(headers, "Content-Type: application/vnd.schemaregistry.v1+json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(post_body->size()));
  }
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout_ms));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  if (!options_.username.empty()) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, options_.username.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, options_.password.c_str());
  }
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  const CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(fmt::format("schema registry {}: {}", RedactedUrl(url), curl_easy_strerror(rc)));
  }
  return std::make_pair(code, std::move(body));
}

absl::StatusOr<int32_t> SchemaRegistryClient::Register(const std::string& subject, const std::string& schema,
                                                       const std::string& type) {
  const std::string post = nlohmann::json{{"schema", schema}, {"schemaType", type}}.dump();
  auto got = Request(fmt::format("/subjects/{}/versions", subject), &post);
  if (!got.ok()) return got.status();
  const auto& [code, body] = *got;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  int64_t id = 0;
  if (code != 200 || parser.parse(body).get(doc) != simdjson::SUCCESS || doc["id"].get(id) != simdjson::SUCCESS) {
    return absl::InternalError(
        fmt::format("schema registry: registering under {}: HTTP {}: {}", subject, code, body.substr(0, 300)));
  }
  return static_cast<int32_t>(id);
}

absl::StatusOr<std::shared_ptr<const RegisteredSchema>> SchemaRegistryClient::Fetch(int32_t id) {
  auto got = Request(fmt::format("/schemas/ids/{}", id), nullptr);
  if (!got.ok()) return got.status();
  const auto& [code, body] = *got;
  const std::string url = fmt::format("{}/schemas/ids/{}", RedactedUrl(options_.url), id);
  if (code == 404) {
    // Only the API's own "schema not found" (error_code 40403) says the id
    // does not exist; any other 404 is a wrong URL (a base without
    // Apicurio's /apis/ccompat/v7, a proxy), which must not drop records.
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    int64_t error_code = 0;
    if (parser.parse(body).get(doc) == simdjson::SUCCESS && doc["error_code"].get(error_code) == simdjson::SUCCESS &&
        error_code == 40403) {
      return absl::NotFoundError(fmt::format("schema registry {}: no schema has id {}", url, id));
    }
    return absl::UnavailableError(fmt::format(
        "schema registry {}: HTTP 404 without the API's error_code 40403: is the URL the registry's API base?", url));
  }
  if (code >= 500 || code == 429 || code == 408) {
    return absl::UnavailableError(fmt::format("schema registry {}: HTTP {}", url, code));
  }
  if (code != 200) {
    // 401/403 and the like: wrong configuration, which a retry later may
    // see fixed (credentials rotated); never a reason to drop records.
    return absl::UnavailableError(fmt::format("schema registry {}: HTTP {}: {}", url, code, body.substr(0, 200)));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view schema;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc["schema"].get(schema) != simdjson::SUCCESS) {
    // Not the API (a login page, a proxy): held, not dropped.
    return absl::UnavailableError(
        fmt::format("schema registry {}: the answer has no \"schema\" string: {}", url, body.substr(0, 200)));
  }
  auto out = std::make_shared<RegisteredSchema>();
  out->id = id;
  out->text = std::string(schema);
  std::string_view type;
  if (doc["schemaType"].get(type) == simdjson::SUCCESS) out->type = std::string(type);
  return out;
}

}  // namespace kpistream::ingest
