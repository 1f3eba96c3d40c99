#include "services/web_config.h"

#include <crypt.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "kpi/yaml_reader.h"

namespace kpistream::services {

namespace {

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool LooksLikeBcrypt(const std::string& h) {
  return h.size() == 60 && (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"));
}

// A valid hash of no one's password: an unknown user costs one bcrypt too.
constexpr char kDummyHash[] = "$2b$10$CwTycUXWue0Thq9StjUM0uJ8.0nHqMVZ2sSZ1HH5yLYfGhO2vD1Cm";

}  // namespace

absl::StatusOr<WebConfig> LoadWebConfig(const std::string& path) {
  auto text = kpi::YamlReader::ReadFile(path, "web configuration file");
  if (!text.ok()) return text.status();
  return ParseWebConfig(*text, path);
}

absl::StatusOr<WebConfig> ParseWebConfig(std::string_view text, const std::string& path) {
  kpi::YamlReader y(path);
  auto root = y.Load(text);
  if (!root.ok()) return root.status();
  WebConfig c;
  auto file = [&](const YAML::Node& parent, const char* key) -> std::string {
    const auto v = y.Scalar(parent, key, false);
    if (!v) return "";
    std::filesystem::path p = *v;
    if (p.is_relative()) p = std::filesystem::path(path).parent_path() / p;
    return p.string();
  };
  auto st = y.Run([&] {
    if (root->IsNull()) return;  // an empty file: plaintext, no users
    if (!root->IsMap()) {
      y.AddError(*root, "the web configuration must be a map (tls_server_config, basic_auth_users)");
      return;
    }
    y.CheckKeys(*root, {"tls_server_config", "basic_auth_users"});
    if (const auto tls = (*root)["tls_server_config"]) {
      if (!tls.IsMap()) {
        y.AddError(tls,
                   "tls_server_config must be a map (cert_file, key_file, client_auth_type, client_ca_file, "
                   "min_version)");
        return;
      }
      y.CheckKeys(tls, {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"});
      c.cert_file = file(tls, "cert_file");
      c.key_file = file(tls, "key_file");
      c.client_ca_file = file(tls, "client_ca_file");
      if (c.cert_file.empty() || c.key_file.empty()) y.AddError(tls, "tls_server_config needs cert_file and key_file");
      const auto type =
          y.OneOf(tls, "client_auth_type", {"NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"});
      c.verify_client_cert = type && *type != "NoClientCert";
      c.require_client_cert = type && *type == "RequireAndVerifyClientCert";
      if (c.verify_client_cert && c.client_ca_file.empty()) {
        y.AddError(tls, fmt::format("client_auth_type {} needs client_ca_file", *type));
      }
      // Prometheus' default minimum is TLS 1.2; older versions are not served.
      if (const auto v = y.OneOf(tls, "min_version", {"TLS12", "TLS13"})) c.min_tls13 = *v == "TLS13";
    }
    for (const auto& [user, hash] : y.StringMap(*root, "basic_auth_users")) {
      if (!LooksLikeBcrypt(hash)) {
        y.AddError((*root)["basic_auth_users"][user],
                   fmt::format("basic_auth_users.{}: not a bcrypt hash ($2y$..., 60 characters; make one with "
                               "htpasswd -nBC 10 {})",
                               user, user));
        continue;
      }
      c.basic_auth_users[user] = hash;
    }
  });
  if (!st.ok()) return st;
  return c;
}

bool BasicAuth::Check(const char* header) const {
  if (header == nullptr) return false;
  const absl::string_view h = header;
  if (!absl::StartsWithIgnoreCase(h, "Basic ")) return false;
  std::string decoded;
  if (!absl::Base64Unescape(absl::StripAsciiWhitespace(h.substr(6)), &decoded)) return false;
  const auto colon = decoded.find(':');
  if (colon == std::string::npos) return false;
  const std::string user = decoded.substr(0, colon), password = decoded.substr(colon + 1);
  const auto it = users_.find(user);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto p = passed_.find(user); p != passed_.end() && ConstantTimeEqual(p->second, std::string_view(header))) {
      return true;
    }
  }
  const std::string& hash = it == users_.end() ? std::string(kDummyHash) : it->second;
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_r(password.c_str(), hash.c_str(), data.get());
  const bool ok = it != users_.end() && out != nullptr && out[0] != '*' && ConstantTimeEqual(out, hash);
  if (ok) {
    std::lock_guard<std::mutex> l(mu_);
    passed_[user] = header;
  }
  return ok;
}

}  // namespace kpistream::services
