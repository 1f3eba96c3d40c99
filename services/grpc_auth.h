// Who may call kpid's gRPC services: TLS server credentials (optionally
// requiring client certificates) and bearer tokens with scopes.
//
// The tokens file (kpid.yaml `grpc.tokens_file`), YAML:
//
//   tokens:
//     - name: grafana                  # shown in logs and refusals, never the secret
//       token: "c2VjcmV0LXRva2Vu..."   # what the client sends: `authorization: Bearer <token>`
//       scopes: [read]                 # read (KpiService), alerts (AlertService), admin (everything)
//       expires: 2027-01-01T00:00:00Z  # optional, RFC 3339
//
// Clients send the token as gRPC metadata `authorization: Bearer <token>`
// (the OAuth 2.0 bearer scheme of RFC 6750, as gRPC's own call credentials
// and grpcurl's `-H` send it). The health service and server reflection
// need no token, so probes and grpcurl's discovery work; every
// KpiService and AlertService call does.
//
// Refusals: no token, an unknown one or an expired one: UNAUTHENTICATED;
// a valid token without the scope the service needs: PERMISSION_DENIED.
// The message says which, never echoing the token.
//
// Thread-safety: TokenAuthenticator is safe from any thread; Check runs on
// gRPC's threads while Reload runs on another.
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kpistream::services {

struct GrpcTlsOptions {
  std::string cert_file;       // PEM server certificate chain; empty: plaintext
  std::string key_file;        // PEM private key of cert_file
  std::string client_ca_file;  // PEM CAs; set: every client must present a certificate they signed
};

// Plaintext when options.cert_file is empty. INVALID_ARGUMENT naming the
// file when a file cannot be read or is not PEM, or the key is missing.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const GrpcTlsOptions& options);

enum class Scope : uint8_t { kRead = 1, kAlerts = 2, kAdmin = 4 };
std::string_view ScopeName(Scope scope);

struct BearerToken {
  std::string name;
  std::string secret;
  uint8_t scopes = 0;        // Scope bits; kAdmin grants every scope
  int64_t expires_unix = 0;  // seconds; 0 = never
};

// Parses a tokens file's text (format above). INVALID_ARGUMENT with
// file:line:col for each error: unknown keys, a missing name or token, a
// token shorter than 16 bytes, an unknown scope, a bad date, duplicate
// names or secrets.
[[nodiscard]] absl::StatusOr<std::vector<BearerToken>> ParseTokens(std::string_view text, const std::string& path);

class TokenAuthenticator {
 public:
  // Reads the file. The errors of ParseTokens, or NOT_FOUND.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(const std::string& path);

  // Re-reads the file; on error the tokens in use stay and the error is
  // returned. Check also re-reads it, at most once a second, when its
  // modification time or size changed (a rotated Kubernetes Secret).
  absl::Status Reload();

  // OK when `authorization` (the metadata value, "Bearer <token>") names an
  // unexpired token with `needed`; otherwise the refusal above.
  // `now_unix`: wall-clock seconds.
  absl::Status Check(std::string_view authorization, Scope needed, int64_t now_unix);
  // The same, reading the call's metadata.
  grpc::Status CheckCall(const grpc::ServerContextBase& ctx, Scope needed);

  size_t size() const;

 private:
  explicit TokenAuthenticator(std::string path) : path_(std::move(path)) {}
  void MaybeReload();

  const std::string path_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<BearerToken>> tokens_;  // GUARDED_BY(mu_)
  int64_t file_mtime_ns_ = 0;                               // GUARDED_BY(mu_)
  uint64_t file_size_ = 0;                                  // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point last_stat_;         // GUARDED_BY(mu_)
};

// What a handler calls first: OK when `auth` is null (no tokens
// configured), else auth->CheckCall.
grpc::Status Authorize(TokenAuthenticator* auth, const grpc::ServerContextBase& ctx, Scope needed);

// A server stream that ends at once with `status` (a refusal), for the
// callback API's streaming handlers. It deletes itself when done.
template <class Response>
grpc::ServerWriteReactor<Response>* FinishedStream(grpc::Status status) {
  struct Finished final : grpc::ServerWriteReactor<Response> {
    explicit Finished(grpc::Status s) { this->Finish(std::move(s)); }
    void OnDone() override { delete this; }
  };
  return new Finished(std::move(status));
}

}  // namespace kpistream::services
