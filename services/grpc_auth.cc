#include "services/grpc_auth.h"

#include <fmt/format.h>
#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <ctime>
#include <set>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "kpi/yaml_reader.h"

namespace kpistream::services {

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what) {
  auto text = kpi::YamlReader::ReadFile(path, what);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  if (text->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format("{} {} is not PEM (no '-----BEGIN' line)", what, path));
  }
  return text;
}

// Compares in time independent of where the first difference is, so the
// time a refusal takes says nothing about a secret's prefix.
bool SameSecret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string ScopeList(uint8_t scopes) {
  std::string out;
  for (Scope s : {Scope::kRead, Scope::kAlerts, Scope::kAdmin}) {
    if (!(scopes & static_cast<uint8_t>(s))) continue;
    if (!out.empty()) out += ", ";
    out += ScopeName(s);
  }
  return out;
}

class TokenFileReader {
 public:
  explicit TokenFileReader(const std::string& path) : y_(path) {}

  absl::StatusOr<std::vector<BearerToken>> Read(std::string_view text) {
    auto root = y_.Load(text);
    if (!root.ok()) return root.status();
    auto st = y_.Run([&] { ReadRoot(*root); });
    if (!st.ok()) return st;
    return std::move(tokens_);
  }

 private:
  void ReadRoot(const YAML::Node& root) {
    if (!root.IsMap() || !root["tokens"] || !root["tokens"].IsSequence()) {
      y_.AddError(root,
                  "a tokens file is a map with a 'tokens' list: tokens: [{name: ..., token: ..., scopes: [read]}]");
      return;
    }
    y_.CheckKeys(root, {"tokens"});
    for (const auto& node : root["tokens"]) ReadToken(node);
  }

  void ReadToken(const YAML::Node& node) {
    if (!node.IsMap()) {
      y_.AddError(node, "each token is a map: {name: ..., token: ..., scopes: [read]}");
      return;
    }
    y_.CheckKeys(node, {"name", "token", "scopes", "expires"});
    BearerToken t;
    if (auto n = y_.Scalar(node, "name", true)) t.name = *n;
    if (auto s = y_.Scalar(node, "token", true)) {
      t.secret = *s;
      if (t.secret.size() < 16) y_.AddError(node["token"], "a token must be at least 16 characters long");
      if (t.secret.find_first_of(" \t\r\n") != std::string::npos) {
        y_.AddError(node["token"], "a token must not contain white space");
      }
      if (!secrets_.insert(t.secret).second) y_.AddError(node["token"], "the same token is listed twice");
    }
    if (!t.name.empty() && !names_.insert(t.name).second) {
      y_.AddError(node["name"], fmt::format("token name '{}' is listed twice", t.name));
    }
    ReadScopes(node, &t);
    if (auto e = y_.Scalar(node, "expires", false)) {
      absl::Time when;
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, *e, &when, &err)) {
        y_.AddError(node["expires"],
                    fmt::format("expires must be an RFC 3339 time such as 2027-01-01T00:00:00Z ({})", err));
      } else {
        t.expires_unix = absl::ToUnixSeconds(when);
      }
    }
    tokens_.push_back(std::move(t));
  }

  void ReadScopes(const YAML::Node& node, BearerToken* t) {
    if (!node["scopes"]) {
      y_.AddError(node, "a token needs scopes: [read], [alerts], [admin] or a combination");
      return;
    }
    const size_t errors_before = y_.ErrorCount();
    for (const auto& [name, where] : y_.List(node, "scopes")) {
      if (name == "read") {
        t->scopes |= static_cast<uint8_t>(Scope::kRead);
      } else if (name == "alerts") {
        t->scopes |= static_cast<uint8_t>(Scope::kAlerts);
      } else if (name == "admin") {
        t->scopes |= static_cast<uint8_t>(Scope::kAdmin);
      } else {
        y_.AddError(where, fmt::format("unknown scope '{}' (known: read, alerts, admin)", name));
      }
    }
    if (t->scopes == 0 && y_.ErrorCount() == errors_before)
      y_.AddError(node["scopes"], "a token needs at least one scope");
  }

  kpi::YamlReader y_;
  std::vector<BearerToken> tokens_;
  std::set<std::string> names_, secrets_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const GrpcTlsOptions& options) {
  if (options.cert_file.empty()) {
    if (!options.key_file.empty() || !options.client_ca_file.empty()) {
      return absl::InvalidArgumentError("grpc.tls needs cert_file (with key_file) to use key_file or client_ca_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.key_file.empty()) return absl::InvalidArgumentError("grpc.tls.cert_file needs key_file");
  auto cert = ReadPem(options.cert_file, "grpc.tls.cert_file");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(options.key_file, "grpc.tls.key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!options.client_ca_file.empty()) {
    auto ca = ReadPem(options.client_ca_file, "grpc.tls.client_ca_file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kRead:
      return "read";
    case Scope::kAlerts:
      return "alerts";
    case Scope::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<std::vector<BearerToken>> ParseTokens(std::string_view text, const std::string& path) {
  return TokenFileReader(path).Read(text);
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(const std::string& path) {
  std::unique_ptr<TokenAuthenticator> auth(new TokenAuthenticator(path));
  if (auto st = auth->Reload(); !st.ok()) return st;
  return auth;
}

absl::Status TokenAuthenticator::Reload() {
  struct stat sb {};
  const bool have_stat = ::stat(path_.c_str(), &sb) == 0;
  auto text = kpi::YamlReader::ReadFile(path_, "tokens file");
  if (!text.ok()) return text.status();
  auto tokens = ParseTokens(*text, path_);
  if (!tokens.ok()) return tokens.status();
  std::lock_guard lock(mu_);
  tokens_ = std::make_shared<const std::vector<BearerToken>>(std::move(*tokens));
  if (have_stat) {
    file_mtime_ns_ = static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
    file_size_ = static_cast<uint64_t>(sb.st_size);
  }
  last_stat_ = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

void TokenAuthenticator::MaybeReload() {
  int64_t mtime = 0;
  uint64_t size = 0;
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_stat_ < std::chrono::seconds(1)) return;
    last_stat_ = now;
    struct stat sb {};
    if (::stat(path_.c_str(), &sb) != 0) return;
    mtime = static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
    size = static_cast<uint64_t>(sb.st_size);
    if (mtime == file_mtime_ns_ && size == file_size_) return;
  }
  if (auto st = Reload(); !st.ok()) {
    spdlog::error("tokens file changed but cannot be used; the previous tokens stay: {}", std::string(st.message()));
    // Retry only after the next change, not on every call. The stat taken
    // before the failed read is recorded, not a new one: a file written in
    // pieces may be whole by now, and must then be read on the next check.
    std::lock_guard lock(mu_);
    file_mtime_ns_ = mtime;
    file_size_ = size;
  } else {
    spdlog::info("tokens file {} reloaded", path_);
  }
}

absl::Status TokenAuthenticator::Check(std::string_view authorization, Scope needed, int64_t now_unix) {
  MaybeReload();
  std::shared_ptr<const std::vector<BearerToken>> tokens;
  {
    std::lock_guard lock(mu_);
    tokens = tokens_;
  }
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.empty()) {
    return absl::UnauthenticatedError("no bearer token: send the metadata 'authorization: Bearer <token>'");
  }
  if (authorization.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kBearer.size()),
                              absl::string_view(kBearer.data(), kBearer.size()))) {
    return absl::UnauthenticatedError("the authorization metadata must read 'Bearer <token>'");
  }
  const std::string_view secret = authorization.substr(kBearer.size());
  const BearerToken* found = nullptr;
  for (const auto& t : *tokens) {
    if (SameSecret(t.secret, secret)) found = &t;
  }
  if (!found) return absl::UnauthenticatedError("unknown bearer token");
  if (found->expires_unix != 0 && now_unix >= found->expires_unix) {
    return absl::UnauthenticatedError(fmt::format(
        "bearer token '{}' expired at {}", found->name,
        absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(found->expires_unix), absl::UTCTimeZone())));
  }
  if (!(found->scopes & (static_cast<uint8_t>(needed) | static_cast<uint8_t>(Scope::kAdmin)))) {
    return absl::PermissionDeniedError(fmt::format("bearer token '{}' has scopes [{}]; this call needs '{}' (or admin)",
                                                   found->name, ScopeList(found->scopes), ScopeName(needed)));
  }
  return absl::OkStatus();
}

grpc::Status TokenAuthenticator::CheckCall(const grpc::ServerContextBase& ctx, Scope needed) {
  std::string_view authorization;
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) authorization = {it->second.data(), it->second.size()};
  const auto st = Check(authorization, needed, static_cast<int64_t>(std::time(nullptr)));
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

size_t TokenAuthenticator::size() const {
  std::lock_guard lock(mu_);
  return tokens_ ? tokens_->size() : 0;
}

grpc::Status Authorize(TokenAuthenticator* auth, const grpc::ServerContextBase& ctx, Scope needed) {
  return auth ? auth->CheckCall(ctx, needed) : grpc::Status::OK;
}

}  // namespace kpistream::services
