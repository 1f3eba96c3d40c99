// /metrics and the other HTTP endpoints behind basic auth, configured
// with Prometheus' web configuration file (the exporter-toolkit format that
// Prometheus, Alertmanager and the exporters read with --web.config.file),
// named in kpid.yaml as `http: {web_config_file: web.yml}`:
//
//   basic_auth_users:
//     prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 USER)
//
//   tls_server_config:                 # HTTPS instead of HTTP
//     cert_file: server.crt            # PEM; relative paths are from this file
//     key_file: server.key
//     client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven,
//     client_ca_file: ca.crt                         #    NoClientCert (default)
//     min_version: TLS12               # or TLS13
//
// Other keys of the format (cipher_suites, http_server_config, ...) are
// refused by name, never ignored. /-/healthy and /-/ready stay open to
// probes (they say only OK or why not); /metrics and /-/reload need a user
// when users are configured. As in Prometheus, changes to the file and to
// the certificates take effect without a restart (services/http_server.h).
//
// Thread-safety: BasicAuth is safe from any thread.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kpistream::services {

struct WebConfig {
  std::string cert_file, key_file, client_ca_file;      // empty cert_file: plaintext
  bool verify_client_cert = false;                      // a client certificate is checked when given
  bool require_client_cert = false;                     // ... and required
  bool min_tls13 = false;                               // min_version TLS13 (default TLS12)
  std::map<std::string, std::string> basic_auth_users;  // name -> bcrypt hash
};

// INVALID_ARGUMENT with file:line:col for every mistake; NOT_FOUND when the
// file cannot be read.
[[nodiscard]] absl::StatusOr<WebConfig> LoadWebConfig(const std::string& path);
[[nodiscard]] absl::StatusOr<WebConfig> ParseWebConfig(std::string_view text, const std::string& path);

// Checks `Authorization: Basic <base64(user:password)>` headers against
// bcrypt hashes (libxcrypt's crypt_r: $2a$, $2b$, $2y$). bcrypt is slow by
// design (tens of ms at cost 10), so the last header each user passed with
// is remembered and compared in constant time; an unknown user costs a
// bcrypt too, so timing does not tell which users exist.
class BasicAuth {
 public:
  explicit BasicAuth(std::map<std::string, std::string> users) : users_(std::move(users)) {}
  bool enabled() const { return !users_.empty(); }
  // `header`: the request's Authorization value (null: none).
  bool Check(const char* header) const;

 private:
  const std::map<std::string, std::string> users_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::string> passed_;  // user -> header; guarded by mu_
};

}  // namespace kpistream::services
